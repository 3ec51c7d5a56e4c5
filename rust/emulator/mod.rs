//! The local Runtime API emulator: `state` holds events, invocations and records, `server` speaks HTTP to the
//! runtime and to invoke callers, `python` binds it as `slipstream._native.Emulator`.

pub mod python;
pub mod server;
pub mod state;

pub(crate) use python::register;
