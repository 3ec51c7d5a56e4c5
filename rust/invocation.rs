//! What `GET /next` delivers: the invocation's metadata, parsed from its headers in one place.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::{header, Headers};

/// Deadlines below this (year 1973 in epoch milliseconds) are relative: cargo-lambda's emulator sends the
/// remaining milliseconds instead of an epoch timestamp.
const RELATIVE_DEADLINE_LIMIT: u64 = 100_000_000_000;

/// One invocation's metadata. Every field but the request id is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationMeta {
    pub request_id: String,
    /// Epoch milliseconds; `None` when absent or unparseable (remaining time then reads 0, as in awslambdaric).
    pub deadline_ms: Option<u64>,
    pub invoked_function_arn: Option<String>,
    pub trace_id: Option<String>,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub tenant_id: Option<String>,
    pub invocation_id: Option<String>,
    /// RAPID always sends one; `application/json` is assumed when it does not.
    pub content_type: String,
}

/// Why a `/next` answer could not be turned into an invocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("the `/next` answer has no `Lambda-Runtime-Aws-Request-Id` header")]
    MissingRequestId,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl InvocationMeta {
    /// Parses the `/next` headers. Only a missing request id is an error: without it no reply can be addressed.
    pub fn from_headers(headers: &Headers) -> Result<Self, MetaError> {
        let owned = |name: &str| header(headers, name).map(str::to_owned);
        let request_id = owned("lambda-runtime-aws-request-id").ok_or(MetaError::MissingRequestId)?;
        let deadline_ms = header(headers, "lambda-runtime-deadline-ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|d| if d < RELATIVE_DEADLINE_LIMIT { now_ms() + d } else { d });
        Ok(Self {
            request_id,
            deadline_ms,
            invoked_function_arn: owned("lambda-runtime-invoked-function-arn"),
            trace_id: owned("lambda-runtime-trace-id"),
            client_context: owned("lambda-runtime-client-context"),
            cognito_identity: owned("lambda-runtime-cognito-identity"),
            tenant_id: owned("lambda-runtime-aws-tenant-id"),
            invocation_id: owned("lambda-runtime-invocation-id"),
            content_type: owned("content-type").unwrap_or_else(|| "application/json".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parses_every_header() {
        let meta = InvocationMeta::from_headers(&h(&[
            ("lambda-runtime-aws-request-id", "r1"),
            ("lambda-runtime-deadline-ms", "1700000000000"),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:1:function:f",
            ),
            ("lambda-runtime-trace-id", "Root=1-2-3"),
            ("lambda-runtime-client-context", "{}"),
            ("lambda-runtime-cognito-identity", "{\"cognitoIdentityId\":\"x\"}"),
            ("lambda-runtime-aws-tenant-id", "t"),
            ("lambda-runtime-invocation-id", "i"),
            ("content-type", "text/plain"),
        ]))
        .unwrap();
        assert_eq!(meta.request_id, "r1");
        assert_eq!(meta.deadline_ms, Some(1_700_000_000_000));
        assert_eq!(meta.tenant_id.as_deref(), Some("t"));
        assert_eq!(meta.invocation_id.as_deref(), Some("i"));
        assert_eq!(meta.content_type, "text/plain");
    }

    #[test]
    fn missing_request_id_is_an_error_and_empty_headers_are_absent() {
        assert_eq!(InvocationMeta::from_headers(&h(&[])), Err(MetaError::MissingRequestId));
        let meta = InvocationMeta::from_headers(&h(&[
            ("lambda-runtime-aws-request-id", "r"),
            ("lambda-runtime-client-context", ""),
        ]))
        .unwrap();
        assert_eq!(meta.client_context, None);
        assert_eq!(meta.content_type, "application/json");
        assert_eq!(meta.deadline_ms, None);
    }

    #[test]
    fn relative_deadline_becomes_absolute() {
        let meta = InvocationMeta::from_headers(&h(&[
            ("lambda-runtime-aws-request-id", "r"),
            ("lambda-runtime-deadline-ms", "3000"),
        ]))
        .unwrap();
        let deadline = meta.deadline_ms.unwrap();
        assert!(deadline > now_ms() + 2000 && deadline <= now_ms() + 3000);
    }
}
