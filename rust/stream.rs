//! Response streaming as Python sees it: `ResponseStream`, one chunk per `write`, error trailers at the end.
//!
//! Each chunk goes from the Python object's own buffer to the socket with the GIL released; nothing is joined
//! or kept, so memory stays flat whatever the response size, and a slow reader pauses the producer through the
//! socket's flow control.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::Engine;
use pyo3::create_exception;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::api::StreamWriter;
use crate::errors::SlipstreamError;

/// Lambda's limit for a streamed response body.
pub const STREAM_LIMIT: usize = 200 * 1024 * 1024;

create_exception!(
    slipstream._native,
    ResponseTooLarge,
    SlipstreamError,
    "The streamed response passed Lambda's 200 MiB limit: the stream was ended with a Function.ResponseSizeTooLarge \
     error trailer."
);
create_exception!(
    slipstream._native,
    StreamClosed,
    SlipstreamError,
    "The response stream was already ended."
);

/// The error trailer's type and base64 body for a stream cut after `sent` bytes.
fn too_large_trailer(sent: usize) -> (String, String) {
    let message = format!(
        "Response payload size exceeded maximum allowed payload size ({STREAM_LIMIT} bytes); the stream was cut \
         after {sent} bytes."
    );
    let body = format!(
        "{{\"errorMessage\": \"{message}\", \"errorType\": \"Function.ResponseSizeTooLarge\", \"stackTrace\": []}}"
    );
    (
        "Function.ResponseSizeTooLarge".to_owned(),
        base64::engine::general_purpose::STANDARD.encode(body),
    )
}

/// A streamed response in progress.
#[pyclass(module = "slipstream._native", name = "ResponseStream", frozen)]
pub struct PyResponseStream {
    /// Held for the whole of a write, which may block on a slow reader: only ever locked with the GIL released.
    writer: Mutex<Option<StreamWriter>>,
    /// Mirrors of the writer's state, so that the getters never wait for a blocked write while holding the GIL.
    written: AtomicUsize,
    closed: AtomicBool,
}

impl PyResponseStream {
    pub(crate) fn new(writer: StreamWriter) -> Self {
        Self {
            writer: Mutex::new(Some(writer)),
            written: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn end(&self, py: Python<'_>, error: Option<(&str, &str)>) -> PyResult<(u16, String)> {
        py.detach(|| {
            let mut slot = self.writer.lock().map_err(|_| StreamClosed::new_err("poisoned"))?;
            let writer = slot
                .take()
                .ok_or_else(|| StreamClosed::new_err("the response stream was already ended"))?;
            self.closed.store(true, Ordering::Relaxed);
            let reply = writer.finish(error)?;
            Ok((reply.status, reply.body))
        })
    }

    /// Sends `data` with the GIL released. The caller keeps the Python object that owns `data` alive (and
    /// unchanged: `bytes` and `str` are immutable) for the duration, so nothing is copied on the way.
    fn write_bytes(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        py.detach(|| {
            let mut guard = self.writer.lock().map_err(|_| StreamClosed::new_err("poisoned"))?;
            let Some(writer) = guard.as_mut() else {
                return Err(StreamClosed::new_err("the response stream was already ended"));
            };
            let written = writer.written();
            if written + data.len() > STREAM_LIMIT {
                // The chunk that would cross the limit is not sent: the body stops at a chunk boundary.
                let (error_type, body) = too_large_trailer(written);
                let writer = guard.take().expect("checked above");
                self.closed.store(true, Ordering::Relaxed);
                let outcome = writer.finish(Some((&error_type, &body)));
                return Err(match outcome {
                    Ok(_) => ResponseTooLarge::new_err(format!(
                        "the response passed {STREAM_LIMIT} bytes; the stream was ended with a {error_type} trailer"
                    )),
                    Err(err) => err.into(),
                });
            }
            let result = writer.write(data);
            if let Err(err) = result {
                // The connection is gone: nothing more can be sent on this stream.
                guard.take();
                self.closed.store(true, Ordering::Relaxed);
                return Err(err.into());
            }
            self.written.store(writer.written(), Ordering::Relaxed);
            Ok(())
        })
    }
}

#[pymethods]
impl PyResponseStream {
    /// Sends one chunk (`bytes`, `bytearray` or `str`, as UTF-8); blocks while the reader is slow.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return self.write_bytes(py, bytes.as_bytes());
        }
        if let Ok(text) = data.cast::<PyString>() {
            // The UTF-8 form is cached inside the str object, so it is encoded once and not copied here.
            return self.write_bytes(py, text.to_str()?.as_bytes());
        }
        if let Ok(array) = data.cast::<PyByteArray>() {
            // Another thread may resize a bytearray while the GIL is released: send a copy.
            return self.write_bytes(py, &array.to_vec());
        }
        Err(PyTypeError::new_err(format!(
            "a streamed response takes bytes, bytearray or str chunks, not {}",
            data.get_type().name()?
        )))
    }

    /// Ends the response successfully; returns RAPID's `(status, body)`.
    fn finish(&self, py: Python<'_>) -> PyResult<(u16, String)> {
        self.end(py, None)
    }

    /// Ends the response with the error trailers: `error_type` and the error document (JSON, sent base64).
    fn fail(&self, py: Python<'_>, error_type: &str, error_body: &[u8]) -> PyResult<(u16, String)> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(error_body);
        self.end(py, Some((error_type, &encoded)))
    }

    /// Body bytes sent so far.
    #[getter]
    fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether the stream was ended (finished, failed, over the limit, or its connection lost).
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyResponseStream>()?;
    m.add("ResponseTooLarge", py.get_type::<ResponseTooLarge>())?;
    m.add("StreamClosed", py.get_type::<StreamClosed>())?;
    m.add("STREAM_LIMIT", STREAM_LIMIT)?;
    Ok(())
}
