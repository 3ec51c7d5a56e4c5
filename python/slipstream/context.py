"""The `context` object handlers receive, attribute for attribute as awslambdaric builds it."""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from typing import Any

# The W3C trace-context fields `context.w3c()` passes through from the client context (string values only).
_W3C_FIELDS = ("traceparent", "tracestate", "baggage")


class CognitoIdentity:
    """The caller's Amazon Cognito identity; always present, its fields None without the header."""

    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __init__(self) -> None:
        self.cognito_identity_id: str | None = None
        self.cognito_identity_pool_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class Client:
    """The mobile client application that invoked the function."""

    # awslambdaric's order, not sorted: code that walks `__slots__` sees the fields as it would there.
    __slots__ = [  # noqa: RUF023
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    ]

    def __init__(self) -> None:
        self.installation_id: Any = None
        self.app_title: Any = None
        self.app_version_name: Any = None
        self.app_version_code: Any = None
        self.app_package_name: Any = None

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}([installation_id={self.installation_id},app_title={self.app_title},"
            f"app_version_name={self.app_version_name},app_version_code={self.app_version_code},"
            f"app_package_name={self.app_package_name}])"
        )


class ClientContext:
    """The client context a mobile SDK caller sent."""

    __slots__ = ["custom", "env", "client"]  # noqa: RUF023 - awslambdaric's order

    def __init__(self) -> None:
        self.custom: Any = None
        self.env: Any = None
        self.client: Client | None = None

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}([custom={self.custom},env={self.env},client={self.client}])"


def make_client_context(client_context: dict[str, Any] | None) -> ClientContext | None:
    if client_context is None:
        return None
    result = ClientContext()
    result.custom = client_context.get("custom")
    result.env = client_context.get("env")
    client = client_context.get("client")
    if client is not None:
        result.client = Client()
        for name in Client.__slots__:
            setattr(result.client, name, client.get(name))
    return result


def make_cognito_identity(identity: dict[str, Any] | None) -> CognitoIdentity:
    result = CognitoIdentity()
    if identity is not None:
        result.cognito_identity_id = identity.get("cognitoIdentityId")
        result.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")
    return result


class LambdaContext:
    """What Lambda tells the handler about the invocation, the function and the execution environment."""

    def __init__(
        self,
        invoke_id: str,
        client_context: dict[str, Any] | None,
        cognito_identity: dict[str, Any] | None,
        epoch_deadline_time_in_ms: int,
        invoked_function_arn: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        environ = os.environ
        self.aws_request_id = invoke_id
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
        # A string, straight from the environment, as awslambdaric hands it over.
        self.memory_limit_in_mb = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self._w3c_fields: dict[str, str] = {}
        if isinstance(client_context, dict) and "w3c" in client_context:
            # The W3C fields travel in the client context but are not the caller's data: they move to w3c().
            client_context = dict(client_context)
            w3c = client_context.pop("w3c")
            if isinstance(w3c, dict):
                self._w3c_fields = {k: v for k in _W3C_FIELDS if isinstance(v := w3c.get(k), str)}
        self.client_context = make_client_context(client_context)
        self.identity = make_cognito_identity(cognito_identity)
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out, never below 0."""
        # Truncated, not rounded, as awslambdaric counts: half the time rounding would give one millisecond less.
        return max(self._epoch_deadline_time_in_ms - int(time.time() * 1000), 0)

    def log(self, msg: object) -> None:
        """Writes `str(msg)` to the function's log as it is, with no level or request id."""
        from slipstream import logs

        logs.context_log(str(msg))

    def w3c(self) -> dict[str, str]:
        """The W3C trace-context fields (traceparent, tracestate, baggage) the caller sent, if any."""
        return dict(self._w3c_fields)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}([aws_request_id={self.aws_request_id},log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},client_context={self.client_context},"
            f"identity={self.identity},tenant_id={self.tenant_id}])"
        )
