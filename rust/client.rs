//! The Runtime API client as Python sees it: `RuntimeClient` and the `Invocation` it hands out.
//!
//! Every blocking call runs with the GIL released. The event body is read from the socket straight into the
//! `bytes` object Python receives; JSON results are encoded by the core into a buffer that is written to the
//! socket as it is, so a response never exists as a Python object.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::api::{self, ApiError, Interrupter, Reply, RuntimeApi, Wake};
use crate::config::Endpoint;
use crate::errors::Interrupted;
use crate::http::Framing;
use crate::invocation::InvocationMeta;
use crate::json;
use crate::stream::PyResponseStream;

/// Content type awslambdaric sends for a handler that returned `bytes`.
const CONTENT_TYPE_BYTES: &str = "application/unknown";
const CONTENT_TYPE_JSON: &str = "application/json";

/// One invocation from `GET /next`.
#[pyclass(module = "slipstream._native", name = "Invocation", frozen)]
pub struct PyInvocation {
    meta: InvocationMeta,
    body: Py<PyBytes>,
}

#[pymethods]
impl PyInvocation {
    /// `Lambda-Runtime-Aws-Request-Id`.
    #[getter]
    fn request_id(&self) -> &str {
        &self.meta.request_id
    }

    /// `Lambda-Runtime-Deadline-Ms` as epoch milliseconds, 0 when absent.
    #[getter]
    fn deadline_ms(&self) -> u64 {
        self.meta.deadline_ms.unwrap_or(0)
    }

    /// `Lambda-Runtime-Invoked-Function-Arn`.
    #[getter]
    fn invoked_function_arn(&self) -> Option<&str> {
        self.meta.invoked_function_arn.as_deref()
    }

    /// `Lambda-Runtime-Trace-Id`.
    #[getter]
    fn trace_id(&self) -> Option<&str> {
        self.meta.trace_id.as_deref()
    }

    /// `Lambda-Runtime-Client-Context`, raw JSON text.
    #[getter]
    fn client_context(&self) -> Option<&str> {
        self.meta.client_context.as_deref()
    }

    /// `Lambda-Runtime-Cognito-Identity`, raw JSON text.
    #[getter]
    fn cognito_identity(&self) -> Option<&str> {
        self.meta.cognito_identity.as_deref()
    }

    /// `Lambda-Runtime-Aws-Tenant-Id`.
    #[getter]
    fn tenant_id(&self) -> Option<&str> {
        self.meta.tenant_id.as_deref()
    }

    /// `Lambda-Runtime-Invocation-Id`, echoed on the reply.
    #[getter]
    fn invocation_id(&self) -> Option<&str> {
        self.meta.invocation_id.as_deref()
    }

    /// The event's `Content-Type`.
    #[getter]
    fn content_type(&self) -> &str {
        &self.meta.content_type
    }

    /// The event payload.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The event as the handler receives it: decoded JSON when the content type is exactly `application/json`
    /// (as awslambdaric decides), the raw `bytes` otherwise. Raises `JSONDecodeError` on invalid JSON.
    fn event<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.meta.content_type == CONTENT_TYPE_JSON {
            json::decode(py, self.body.as_bytes(py))
        } else {
            Ok(self.body.bind(py).clone().into_any())
        }
    }
}

/// The Runtime API client.
#[pyclass(module = "slipstream._native", name = "RuntimeClient", frozen)]
pub struct PyRuntimeClient {
    api: Mutex<RuntimeApi>,
    /// Read end of the `signal.set_wakeup_fd` pipe, or -1.
    wakeup_fd: AtomicI32,
    interrupter: Interrupter,
}

fn poisoned<T>(_: T) -> PyErr {
    PyRuntimeError::new_err("the Runtime API client was poisoned by a panic in another thread")
}

fn reply_tuple(reply: Reply) -> (u16, String) {
    (reply.status, reply.body)
}

impl PyRuntimeClient {
    fn post(&self, py: Python<'_>, path: &str, headers: &[(&str, &str)], body: &[u8]) -> PyResult<(u16, String)> {
        py.detach(|| {
            let mut api = self.api.lock().map_err(poisoned)?;
            Ok(reply_tuple(api.post(path, headers, body)?))
        })
    }
}

/// Headers common to invocation replies: the content type and, when `/next` carried one, the invocation id echo.
fn reply_headers<'a>(content_type: &'a str, invocation_id: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(id) = invocation_id {
        headers.push(("Lambda-Runtime-Invocation-Id", id));
    }
    headers
}

#[pymethods]
impl PyRuntimeClient {
    /// A client of `address` (`host:port` or `http://host:port/prefix`), or of `AWS_LAMBDA_RUNTIME_API`.
    #[new]
    #[pyo3(signature = (user_agent, address = None))]
    fn new(user_agent: String, address: Option<&str>) -> PyResult<Self> {
        let endpoint = match address {
            Some(address) => Endpoint::parse(address)?,
            None => Endpoint::from_env()?,
        };
        Ok(Self {
            api: Mutex::new(RuntimeApi::new(endpoint, user_agent)),
            wakeup_fd: AtomicI32::new(-1),
            interrupter: Interrupter::new().map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
        })
    }

    /// Polls `fd` (the read end of the pipe given to `signal.set_wakeup_fd`) beside the socket while `next()`
    /// waits, so a signal interrupts the wait and Python's handlers run at once. -1 turns it off.
    fn set_wakeup_fd(&self, fd: RawFd) {
        self.wakeup_fd.store(fd, Ordering::Relaxed);
    }

    /// Ends a pending `next()` from another thread, and every later one, with `Interrupted`: how a Managed
    /// Instances slot stops polling at shutdown.
    fn interrupt(&self) {
        self.interrupter.interrupt();
    }

    /// `GET /next`: blocks, without a timeout, until Lambda hands over an invocation.
    fn next(&self, py: Python<'_>) -> PyResult<PyInvocation> {
        let wakeup = Some(self.wakeup_fd.load(Ordering::Relaxed)).filter(|fd| *fd >= 0);
        let interrupt = Some(self.interrupter.fd());
        py.detach(|| {
            let mut guard = self.api.lock().map_err(poisoned)?;
            let api = &mut *guard;
            let mut signal_error: Option<PyErr> = None;
            let mut wait = |fd: RawFd, buffered: bool| -> Result<(), ApiError> {
                if buffered {
                    return Ok(());
                }
                loop {
                    match api::wait_readable(fd, wakeup, interrupt) {
                        Ok(Wake::Ready) => return Ok(()),
                        Ok(Wake::Interrupted) => {
                            signal_error = Some(Interrupted::new_err("the slot was asked to stop polling"));
                            return Err(ApiError::Interrupted);
                        }
                        Ok(Wake::Signal) => {
                            #[expect(
                                clippy::redundant_closure_for_method_calls,
                                reason = "the method path is not general over 'py"
                            )]
                            let checked = Python::attach(|py| py.check_signals());
                            if let Err(err) = checked {
                                signal_error = Some(err);
                                return Err(ApiError::Interrupted);
                            }
                        }
                        Err(source) => {
                            return Err(ApiError::Io {
                                path: api::PATH_NEXT.to_owned(),
                                source,
                            })
                        }
                    }
                }
            };
            let head = loop {
                match api.next_head(&mut wait) {
                    // An answer the runtime cannot act on (no request id) cannot be replied to either: it is
                    // reported and the runtime polls again, where awslambdaric crashes.
                    Err(ApiError::Meta(err)) => eprintln!("slipstream: skipped a /next answer: {err}"),
                    other => break other,
                }
            };
            let head = match head {
                Ok(head) => head,
                Err(ApiError::Interrupted) => {
                    // The request is still pending on this connection; a fresh one is needed if Python goes on.
                    api.reset();
                    return Err(signal_error.unwrap_or_else(|| PyRuntimeError::new_err("interrupted")));
                }
                Err(err) => return Err(err.into()),
            };
            let body = match head.framing {
                Framing::Length(len) => Python::attach(|py| {
                    PyBytes::new_with(py, len, |buf| {
                        py.detach(|| api.read_body_into(buf)).map_err(PyErr::from)
                    })
                    .map(Bound::unbind)
                })?,
                framing => {
                    let data = api.read_body(framing)?;
                    Python::attach(|py| PyBytes::new(py, &data).unbind())
                }
            };
            Ok(PyInvocation { meta: head.meta, body })
        })
    }

    /// `POST /response` with a handler's result: `bytes` are sent as they are (`application/unknown`), anything
    /// else is encoded as JSON by the core. Returns RAPID's `(status, body)`; raises `MarshalError` before sending
    /// anything when the result cannot be encoded.
    #[pyo3(signature = (request_id, invocation_id, result, ensure_ascii = true))]
    fn post_response(
        &self,
        py: Python<'_>,
        request_id: &str,
        invocation_id: Option<&str>,
        result: &Bound<'_, PyAny>,
        ensure_ascii: bool,
    ) -> PyResult<(u16, String)> {
        let path = api::path_response(request_id);
        if let Ok(bytes) = result.cast::<PyBytes>() {
            let headers = reply_headers(CONTENT_TYPE_BYTES, invocation_id);
            return self.post(py, &path, &headers, bytes.as_bytes());
        }
        let mut body = Vec::new();
        json::encode(result, ensure_ascii, &mut body)?;
        self.post(py, &path, &reply_headers(CONTENT_TYPE_JSON, invocation_id), &body)
    }

    /// Starts a streamed `POST /response` with the given content type; the body follows through the returned
    /// stream's `write`, and `finish` or `fail` ends it.
    fn open_stream(
        &self,
        py: Python<'_>,
        request_id: &str,
        invocation_id: Option<&str>,
        content_type: &str,
    ) -> PyResult<PyResponseStream> {
        let headers = reply_headers(content_type, invocation_id);
        py.detach(|| {
            let mut api = self.api.lock().map_err(poisoned)?;
            Ok(PyResponseStream::new(api.open_stream(request_id, &headers)?))
        })
    }

    /// `POST /error` with an error document already encoded, and the X-Ray cause header (sent empty when `""`,
    /// as awslambdaric does).
    fn post_error(
        &self,
        py: Python<'_>,
        request_id: &str,
        invocation_id: Option<&str>,
        body: &[u8],
        xray_cause: &str,
    ) -> PyResult<(u16, String)> {
        let mut headers = reply_headers(CONTENT_TYPE_JSON, invocation_id);
        // An empty cause (one of 1 MiB or more is dropped) is left out, not sent as an empty header, as libcurl
        // leaves it out for awslambdaric.
        if !xray_cause.is_empty() {
            headers.push(("Lambda-Runtime-Function-XRay-Error-Cause", xray_cause));
        }
        self.post(py, &api::path_error(request_id), &headers, body)
    }

    /// `POST /init/error` with the error type header.
    fn post_init_error(&self, py: Python<'_>, error_type: &str, body: &[u8]) -> PyResult<(u16, String)> {
        let headers = [
            ("Content-Type", CONTENT_TYPE_JSON),
            ("Lambda-Runtime-Function-Error-Type", error_type),
        ];
        self.post(py, api::PATH_INIT_ERROR, &headers, body)
    }

    /// `GET /restore/next` (SnapStart): returns `(status, body)` once the environment has been restored.
    fn restore_next(&self, py: Python<'_>) -> PyResult<(u16, String)> {
        py.detach(|| {
            let mut api = self.api.lock().map_err(poisoned)?;
            // The snapshot freezes this process: a pooled connection would not survive the restore.
            api.reset();
            let reply = api.restore_next()?;
            api.reset();
            Ok(reply_tuple(reply))
        })
    }

    /// `POST /restore/error` (SnapStart) with the error type header.
    fn post_restore_error(&self, py: Python<'_>, error_type: &str, body: &[u8]) -> PyResult<(u16, String)> {
        let headers = [
            ("Content-Type", CONTENT_TYPE_JSON),
            ("Lambda-Runtime-Function-Error-Type", error_type),
        ];
        self.post(py, api::PATH_RESTORE_ERROR, &headers, body)
    }

    /// `host:port` of the Runtime API this client talks to.
    #[getter]
    fn authority(&self) -> PyResult<String> {
        Ok(self.api.lock().map_err(poisoned)?.endpoint().authority.clone())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyInvocation>()?;
    m.add_class::<PyRuntimeClient>()?;
    Ok(())
}
