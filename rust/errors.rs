//! The Python exceptions the core raises, and the one place Rust errors become them.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::api::ApiError;
use crate::config::ConfigError;

create_exception!(
    slipstream._native,
    SlipstreamError,
    PyException,
    "Base class of the errors slipstream's core raises."
);
create_exception!(
    slipstream._native,
    RuntimeApiError,
    SlipstreamError,
    "The Runtime API could not be reached or answered in a way the runtime cannot continue from."
);
create_exception!(
    slipstream._native,
    ConfigurationError,
    SlipstreamError,
    "The environment does not describe a usable runtime."
);
create_exception!(
    slipstream._native,
    Interrupted,
    SlipstreamError,
    "A pending `next()` was ended by `interrupt()`."
);

impl From<ApiError> for PyErr {
    #[cold]
    fn from(err: ApiError) -> PyErr {
        RuntimeApiError::new_err(err.to_string())
    }
}

impl From<ConfigError> for PyErr {
    #[cold]
    fn from(err: ConfigError) -> PyErr {
        ConfigurationError::new_err(err.to_string())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SlipstreamError", py.get_type::<SlipstreamError>())?;
    m.add("RuntimeApiError", py.get_type::<RuntimeApiError>())?;
    m.add("Interrupted", py.get_type::<Interrupted>())?;
    m.add("ConfigurationError", py.get_type::<ConfigurationError>())?;
    Ok(())
}
