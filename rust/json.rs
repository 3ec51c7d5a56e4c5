//! Interim codec through the stdlib `json` module, replaced by the native codec.
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (PyBytes::new(py, data),))
}

pub fn encode(obj: &Bound<'_, PyAny>, ensure_ascii: bool, out: &mut Vec<u8>) -> PyResult<()> {
    let py = obj.py();
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("ensure_ascii", ensure_ascii)?;
    let s: String = py
        .import("json")?
        .call_method("dumps", (obj,), Some(&kwargs))?
        .extract()?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[pyfunction]
fn loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    decode(py, data)
}

#[pyfunction]
#[pyo3(signature = (obj, ensure_ascii = true))]
fn dumps<'py>(obj: &Bound<'py, PyAny>, ensure_ascii: bool) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    encode(obj, ensure_ascii, &mut out)?;
    Ok(PyBytes::new(obj.py(), &out))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MarshalError", m.py().get_type::<MarshalError>())?;
    m.add_function(wrap_pyfunction!(loads, m)?)?;
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    Ok(())
}
pyo3::create_exception!(slipstream._native, MarshalError, pyo3::exceptions::PyTypeError);
