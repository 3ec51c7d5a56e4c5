//! Response streaming as Python sees it: `ResponseStream`, one chunk per `write`, error trailers at the end.
//!
//! Each chunk goes from the Python object's own buffer to the socket with the GIL released; nothing is joined
//! or kept, so memory stays flat whatever the response size, and a slow reader pauses the producer through the
//! socket's flow control.

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

/// The error trailer's type and base64 body for an oversized stream.
fn too_large_trailer(written: usize) -> (String, String) {
    let message = format!(
        "Response payload size exceeded maximum allowed payload size ({STREAM_LIMIT} bytes); {written} were sent."
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
    writer: Mutex<Option<StreamWriter>>,
}

impl PyResponseStream {
    pub(crate) fn new(writer: StreamWriter) -> Self {
        Self {
            writer: Mutex::new(Some(writer)),
        }
    }

    fn end(&self, py: Python<'_>, error: Option<(&str, &str)>) -> PyResult<(u16, String)> {
        py.detach(|| {
            let mut slot = self.writer.lock().map_err(|_| StreamClosed::new_err("poisoned"))?;
            let writer = slot
                .take()
                .ok_or_else(|| StreamClosed::new_err("the response stream was already ended"))?;
            let reply = writer.finish(error)?;
            Ok((reply.status, reply.body))
        })
    }
}

fn write_bytes(py: Python<'_>, slot: &Mutex<Option<StreamWriter>>, data: &[u8]) -> PyResult<()> {
    py.detach(|| {
        let mut guard = slot.lock().map_err(|_| StreamClosed::new_err("poisoned"))?;
        let Some(writer) = guard.as_mut() else {
            return Err(StreamClosed::new_err("the response stream was already ended"));
        };
        let written = writer.written();
        if written + data.len() > STREAM_LIMIT {
            let (error_type, body) = too_large_trailer(written + data.len());
            let writer = guard.take().expect("checked above");
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
            return Err(err.into());
        }
        Ok(())
    })
}

#[pymethods]
impl PyResponseStream {
    /// Sends one chunk (`bytes`, `bytearray` or `str`, as UTF-8); blocks while the reader is slow.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(bytes) = data.cast::<PyBytes>() {
            return write_bytes(py, &self.writer, bytes.as_bytes());
        }
        if let Ok(text) = data.cast::<PyString>() {
            return write_bytes(py, &self.writer, text.to_str()?.as_bytes());
        }
        if let Ok(array) = data.cast::<PyByteArray>() {
            return write_bytes(py, &self.writer, &array.to_vec());
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
        self.writer
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(StreamWriter::written))
            .unwrap_or(0)
    }

    /// Whether the stream was ended (finished, failed, over the limit, or its connection lost).
    #[getter]
    fn closed(&self) -> bool {
        self.writer.lock().map_or(true, |w| w.is_none())
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
