//! slipstream's native core, exposed to Python as `slipstream._native`.
//!
//! One module per concern: `config` reads the environment, `http` frames HTTP/1.1 messages, `api` is the Runtime
//! API client, `invocation` holds what `/next` delivered, `json` is the event/result codec, `client` binds the API
//! client to Python, `stream` sends streamed responses, `emulator` is the local Runtime API server.

use pyo3::prelude::*;

pub mod api;
pub mod client;
pub mod config;
pub mod emulator;
pub mod errors;
pub mod http;
pub mod invocation;
pub mod json;
pub mod stream;

/// The crate version, as Cargo knows it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `release`, `debug` or another Cargo profile: benchmark results record it.
pub const BUILD_PROFILE: &str = if cfg!(debug_assertions) { "debug" } else { "release" };

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", VERSION)?;
    m.add("build_profile", BUILD_PROFILE)?;
    errors::register(m)?;
    client::register(m)?;
    json::register(m)?;
    stream::register(m)?;
    emulator::register(m)?;
    Ok(())
}
