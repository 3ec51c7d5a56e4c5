//! Every environment variable the core reads, by name, and the parsing of the Runtime API address.

use std::env;

/// `host:port` of the Runtime API, or an `http://host:port/prefix` URL as cargo-lambda's emulator sets it.
pub const RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// The Runtime API version prefix every endpoint path starts with.
pub const API_VERSION: &str = "/2018-06-01";

/// Where the Runtime API lives: a socket address and the path every endpoint is prefixed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, as `TcpStream::connect` takes it.
    pub authority: String,
    /// `/2018-06-01`, or `<prefix>/2018-06-01` when the address carried a path.
    pub base_path: String,
}

/// Why the Runtime API address could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("`AWS_LAMBDA_RUNTIME_API` is not set: slipstream must be started by Lambda or an emulator")]
    MissingRuntimeApi,
    #[error("`AWS_LAMBDA_RUNTIME_API` is not `host:port` or `http://host:port[/prefix]`: `{0}`")]
    InvalidRuntimeApi(String),
}

impl Endpoint {
    /// Parses `host:port` or `http://host:port[/prefix]`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::InvalidRuntimeApi(value.to_owned());
        let trimmed = value.trim();
        let (rest, had_scheme) = match trimmed.strip_prefix("http://") {
            Some(rest) => (rest, true),
            None => (trimmed, false),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) if had_scheme => (&rest[..i], rest[i..].trim_end_matches('/')),
            Some(_) => return Err(invalid()),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid());
        }
        Ok(Self {
            authority: authority.to_owned(),
            base_path: format!("{prefix}{API_VERSION}"),
        })
    }

    /// Reads and parses `AWS_LAMBDA_RUNTIME_API`.
    pub fn from_env() -> Result<Self, ConfigError> {
        match env::var(RUNTIME_API) {
            Ok(value) => Self::parse(&value),
            Err(_) => Err(ConfigError::MissingRuntimeApi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port() {
        let e = Endpoint::parse("127.0.0.1:9001").unwrap();
        assert_eq!(e.authority, "127.0.0.1:9001");
        assert_eq!(e.base_path, "/2018-06-01");
    }

    #[test]
    fn parses_url_with_prefix_as_cargo_lambda_sets_it() {
        let e = Endpoint::parse("http://127.0.0.1:9000/.rt/").unwrap();
        assert_eq!(e.authority, "127.0.0.1:9000");
        assert_eq!(e.base_path, "/.rt/2018-06-01");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "localhost", "host:notaport", ":9001", "127.0.0.1:9001/x", "http://"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
