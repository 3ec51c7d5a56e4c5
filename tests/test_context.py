"""The context object: attribute for attribute, method for method, against awslambdaric's."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from awslambdaric.lambda_context import LambdaContext as TheirContext

from slipstream.context import LambdaContext

CASES: list[tuple[Any, ...]] = [
    ("rid", None, None, 0, None, None),
    (
        "rid",
        {"client": {"installation_id": "i", "app_title": "t"}, "custom": {"a": 1}, "env": {"b": 2}},
        {"cognitoIdentityId": "cid", "cognitoIdentityPoolId": "pid"},
        int(time.time() * 1000) + 60_000,
        "arn:aws:lambda:eu-west-1:123:function:f:live",
        "tenant-7",
    ),
    (
        "rid",
        {"custom": {"x": 1}, "w3c": {"traceparent": "00-a-b-01", "tracestate": "k=v", "bad": "no", "baggage": 3}},
        None,
        1,
        "arn",
        None,
    ),
    ("rid", {"client": None}, {}, 5, None, ""),
]


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    monkeypatch.setenv("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/fn")
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/04/[$LATEST]abc")


@pytest.mark.parametrize("args", CASES)
def test_context_matches_awslambdaric(args: tuple[Any, ...]) -> None:
    theirs = TheirContext(*copy.deepcopy(args))
    ours = LambdaContext(*args)
    assert repr(ours) == repr(theirs)
    for name in [
        "aws_request_id",
        "log_group_name",
        "log_stream_name",
        "function_name",
        "memory_limit_in_mb",
        "function_version",
        "invoked_function_arn",
        "tenant_id",
    ]:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert repr(ours.identity) == repr(theirs.identity)
    assert repr(ours.client_context) == repr(theirs.client_context)
    assert ours.w3c() == theirs.w3c()
    assert abs(ours.get_remaining_time_in_millis() - theirs.get_remaining_time_in_millis()) <= 2


def test_memory_is_a_string_and_identity_never_none() -> None:
    context = LambdaContext("r", None, None, 0)
    assert context.memory_limit_in_mb == "512"
    assert context.identity is not None
    assert context.identity.cognito_identity_id is None
    assert context.get_remaining_time_in_millis() == 0


def test_w3c_returns_a_copy() -> None:
    context = LambdaContext("r", {"w3c": {"traceparent": "tp"}}, None, 0)
    context.w3c()["traceparent"] = "changed"
    assert context.w3c() == {"traceparent": "tp"}
    assert context.client_context is not None
    assert context.client_context.custom is None
