//! The emulator as Python sees it: `slipstream._native.Emulator`, which `slipstream.emulator` wraps with process
//! management and friendlier result objects. Every wait releases the GIL.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::server::{Config, Server};
use super::state::{monotonic_ns, Event, Fault, Outcome, Record};
use crate::http::Headers;

#[pyclass(module = "slipstream._native", name = "Emulator", frozen)]
pub struct PyEmulator {
    server: Server,
    shared: Arc<super::state::Shared>,
    address: String,
    function_arn: String,
}

fn duration(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| PyValueError::new_err("a timeout is a non-negative number"))
}

fn headers_list<'py>(py: Python<'py>, headers: &Headers) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

fn outcome_dict<'py>(py: Python<'py>, outcome: &Outcome) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("request_id", &outcome.request_id)?;
    dict.set_item("kind", outcome.kind.as_str())?;
    dict.set_item("status", outcome.status)?;
    dict.set_item("headers", headers_list(py, &outcome.headers)?)?;
    dict.set_item("body", PyBytes::new(py, &outcome.body))?;
    dict.set_item("body_len", outcome.body_len)?;
    dict.set_item("trailers", headers_list(py, &outcome.trailers)?)?;
    dict.set_item("streamed", outcome.streamed)?;
    dict.set_item("chunks", outcome.chunks)?;
    dict.set_item("delivered_ns", outcome.delivered_ns)?;
    dict.set_item("first_byte_ns", outcome.first_byte_ns)?;
    dict.set_item("done_ns", outcome.done_ns)?;
    Ok(dict)
}

fn record_dict<'py>(py: Python<'py>, record: &Record) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("kind", record.kind)?;
    dict.set_item("request_id", record.request_id.as_deref())?;
    dict.set_item("status", record.status)?;
    dict.set_item("headers", headers_list(py, &record.headers)?)?;
    dict.set_item("body", PyBytes::new(py, &record.body))?;
    dict.set_item("body_len", record.body_len)?;
    dict.set_item("trailers", headers_list(py, &record.trailers)?)?;
    dict.set_item("at_ns", record.at_ns)?;
    Ok(dict)
}

#[pymethods]
impl PyEmulator {
    #[new]
    #[pyo3(signature = (
        port = 0,
        snap_start = false,
        max_concurrency = 0,
        function_arn = "arn:aws:lambda:us-east-1:000000000000:function:function".to_owned(),
        timeout = 300.0,
        keep_records = true,
        keep_body = 64 * 1024 * 1024,
    ))]
    fn new(
        port: u16,
        snap_start: bool,
        max_concurrency: usize,
        function_arn: String,
        timeout: f64,
        keep_records: bool,
        keep_body: usize,
    ) -> PyResult<Self> {
        let config = Config {
            port,
            snap_start,
            max_concurrency,
            function_arn: function_arn.clone(),
            timeout: duration(timeout)?,
            keep_body,
        };
        let server = Server::start(config, keep_records)
            .map_err(|e| PyRuntimeError::new_err(format!("the emulator could not listen: {e}")))?;
        Ok(Self {
            shared: Arc::clone(&server.shared),
            address: server.addr.to_string(),
            server,
            function_arn,
        })
    }

    /// `127.0.0.1:port`, as `AWS_LAMBDA_RUNTIME_API` takes it.
    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    #[getter]
    fn function_arn(&self) -> &str {
        &self.function_arn
    }

    /// Queues an event for the next `/next`; returns its request id. `headers` are extra `/next` headers.
    #[pyo3(signature = (
        body, content_type = Some("application/json".to_owned()), headers = Vec::new(), deadline_ms = None,
        request_id = None, next_status = None, next_body = Vec::new(), next_content_type = None, next_close = false,
        omit_headers = Vec::new(), chunked = false, reply_status = None, reply_close = false,
    ))]
    #[expect(clippy::too_many_arguments, reason = "keyword arguments from Python")]
    fn enqueue(
        &self,
        body: Vec<u8>,
        content_type: Option<String>,
        headers: Vec<(String, String)>,
        deadline_ms: Option<u64>,
        request_id: Option<String>,
        next_status: Option<u16>,
        next_body: Vec<u8>,
        next_content_type: Option<String>,
        next_close: bool,
        omit_headers: Vec<String>,
        chunked: bool,
        reply_status: Option<u16>,
        reply_close: bool,
    ) -> String {
        let event = Event {
            request_id: request_id.unwrap_or_default(),
            body: body.into(),
            content_type,
            headers,
            deadline_ms,
            fault: Fault {
                next_status,
                next_body,
                next_content_type,
                next_close,
                omit_headers: omit_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
                chunked,
                reply_status,
                reply_close,
            },
            sink: None,
            expect: None,
            enqueued_ns: monotonic_ns(),
        };
        self.server.enqueue(event)
    }

    /// Waits up to `timeout` seconds for the invocation's outcome and takes it; `None` if it has not ended.
    fn take_outcome<'py>(
        &self,
        py: Python<'py>,
        request_id: &str,
        timeout: f64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let timeout = duration(timeout)?;
        let outcome = py.detach(|| {
            let mut found = None;
            self.shared.wait_until(timeout, |state| {
                found = state.outcomes.remove(request_id);
                found.is_some() || state.closed
            });
            found
        });
        outcome.map(|o| outcome_dict(py, &o)).transpose()
    }

    /// Every call the runtime made so far, or those of one kind, oldest first.
    #[pyo3(signature = (kind = None))]
    fn records<'py>(&self, py: Python<'py>, kind: Option<&str>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let records: Vec<Record> = {
            let state = self.shared.lock();
            state
                .records
                .iter()
                .filter(|r| kind.is_none_or(|k| r.kind == k))
                .cloned()
                .collect()
        };
        records.iter().map(|r| record_dict(py, r)).collect()
    }

    /// Waits until at least `count` records of `kind` exist; returns whether they do.
    fn wait_records(&self, py: Python<'_>, kind: &str, count: usize, timeout: f64) -> PyResult<bool> {
        let timeout = duration(timeout)?;
        Ok(py.detach(|| {
            self.shared.wait_until(timeout, |state| {
                state.records.iter().filter(|r| r.kind == kind).count() >= count
            })
        }))
    }

    /// Ends the invocations in flight with an `exit` outcome (the runtime process is gone); returns how many.
    fn fail_inflight(&self) -> usize {
        self.server.fail_inflight()
    }

    /// How many invocations are queued and in flight.
    fn pending(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.queue.len(), state.inflight.len())
    }

    /// Serves `count` copies of `body` as fast as the runtime asks, checks every reply against `expect`, and
    /// returns the counts and per-invocation latencies (delivery to reply, ns): the benchmark path.
    #[pyo3(signature = (body, expect, count, timeout, content_type = "application/json".to_owned()))]
    fn run_feed<'py>(
        &self,
        py: Python<'py>,
        body: Vec<u8>,
        expect: Vec<u8>,
        count: usize,
        timeout: f64,
        content_type: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        let timeout = duration(timeout)?;
        let started = monotonic_ns();
        let stats = py.detach(|| {
            self.server
                .run_feed(body.into(), expect.into(), content_type, count, timeout)
        });
        let elapsed = monotonic_ns() - started;
        let dict = PyDict::new(py);
        dict.set_item("completed", stats.completed)?;
        dict.set_item("errors", stats.errors)?;
        dict.set_item("mismatches", stats.mismatches)?;
        dict.set_item("elapsed_ns", elapsed)?;
        dict.set_item("latencies_ns", stats.latencies_ns)?;
        dict.set_item("first_error", stats.first_error)?;
        Ok(dict)
    }

    /// Stops the server; pending waits end.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.server.close());
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEmulator>()?;
    Ok(())
}
