"""Handlers for the differential tests (tests/differential), run under awslambdaric and slipstream alike.

Each handler picks what it does from `event["case"]`, so one runtime process serves a whole table of cases.
"""

import collections
import datetime
import decimal
import enum
import json
import logging
import os
import sys
import types
import uuid

logger = logging.getLogger("differential")
# Written before any invocation: the request id is empty, and only a DEBUG or INFO level shows it.
logger.info("module imported")

Point = collections.namedtuple("Point", "x y")


class Colour(enum.IntEnum):
    RED = 1


class Plain(enum.Enum):
    A = "a"


class Text(str):
    pass


class Mapping(dict):
    pass


class Raw(bytes):
    pass


def _circular():
    items = []
    items.append(items)
    return items


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


# Built on demand: some values (sets, objects) would not survive being built once and returned twice.
RESULTS = {
    "none": lambda: None,
    "true": lambda: True,
    "zero": lambda: 0,
    "string": lambda: "plain text",
    "empty_string": lambda: "",
    "unicode": lambda: "é✓ 日本語 \U0001f600 \u2028\u2029",
    "control": lambda: 'tab\t nl\n cr\r quote" backslash\\ slash/ nul\x00 esc\x1b del\x7f',
    "list": lambda: [1, "two", 3.0, None, True, False, [], {}, [[[]]]],
    "tuple": lambda: (1, (2, 3), []),
    "dict": lambda: {"a": {"b": {"c": [1, {"d": None}]}}, "": "empty key", "é": "ü"},
    "big_ints": lambda: [2**70, -(2**70), 2**64, 2**63 - 1, -(2**63), 10**40],
    "floats": lambda: [0.1, 1e300, -0.0, 1.5e-7, 1e16, 1e15, 123456789.123, 5e-324, 1.7976931348623157e308, 2.5],
    "nan": lambda: float("nan"),
    "infinities": lambda: [float("inf"), float("-inf"), {"nan": float("nan")}],
    "decimals": lambda: [
        decimal.Decimal("1.10"),
        decimal.Decimal("1E+2"),
        decimal.Decimal("-0"),
        decimal.Decimal("0.000001"),
        decimal.Decimal("123456789012345678901234567890.123456789"),
        decimal.Decimal("1e-7"),
    ],
    "decimal_nan": lambda: [decimal.Decimal("NaN"), decimal.Decimal("-NaN")],
    "decimal_infinity": lambda: [decimal.Decimal("Infinity"), decimal.Decimal("-Infinity")],
    "namedtuple": lambda: Point(1, "two"),
    "nested_namedtuple": lambda: {"points": [Point(1, 2), Point(Point(3, 4), None)]},
    "nested_bytes": lambda: {"b": b"abc", "list": [b"\xc3\xa9", b""], "tuple": (b"x",)},
    "bytes": lambda: b"\x00\x01raw \xff bytes",
    "empty_bytes": lambda: b"",
    "dict_keys": lambda: {2: "int", 2.5: "float", True: "bool", None: "none", "s": "str"},
    "int_enum": lambda: {"colour": Colour.RED, Colour.RED: "as key"},
    "str_subclass": lambda: Text("sub"),
    "dict_subclass": lambda: Mapping(k=Mapping(v=1)),
    "ordered_dict": lambda: collections.OrderedDict([("z", 1), ("a", 2)]),
    # Unserialisable: each is a Runtime.MarshalError whose message names the cause.
    "set": lambda: {"when": {1, 2}},
    "frozenset": lambda: frozenset(),
    "datetime": lambda: {"at": datetime.datetime(2026, 1, 1, 12, 30)},
    "date": lambda: datetime.date(2026, 1, 1),
    "object": lambda: object(),
    "uuid": lambda: uuid.UUID(int=1),
    "plain_enum": lambda: Plain.A,
    "bytearray": lambda: bytearray(b"raw"),
    "nested_bytearray": lambda: [bytearray(b"raw")],
    "complex": lambda: 1j,
    "tuple_key": lambda: {(1, 2): "tuple key"},
    "decimal_key": lambda: {decimal.Decimal("1.5"): "decimal key"},
    "circular": _circular,
    "invalid_utf8_bytes": lambda: {"b": b"\xff\xfe"},
    "lone_surrogate": lambda: "\udcff",
    "bytes_subclass": lambda: Raw(b"raw subclass"),
    "memoryview": lambda: memoryview(b"view"),
    "range": lambda: range(3),
    "dict_keys_view": lambda: {"a": 1}.keys(),
    "simple_namespace": lambda: types.SimpleNamespace(a=1),
    "deep_list": lambda: _nested(2000),
    "shallow_list": lambda: _nested(100),
}


def returns(event, context):
    return RESULTS[event["case"]]()


def echo(event, context):
    return event


def event_type(event, context):
    """What the handler was given: its type and, for bytes, the bytes themselves."""
    if isinstance(event, bytes):
        return {"type": "bytes", "value": event.decode("latin-1")}
    return {"type": type(event).__name__, "value": event}


class CustomError(Exception):
    pass


class NoMessageError(Exception):
    pass


class Nested:
    class InnerError(Exception):
        pass


def _helper_failure():
    from tests.differential import helpers

    helpers.parse_all(["1", "two"])


def _chained():
    try:
        {}["missing"]
    except KeyError as exc:
        raise RuntimeError("wrapped the lookup") from exc


def _implicitly_chained():
    try:
        1 / 0  # noqa: B018 - the ZeroDivisionError is the point
    except ZeroDivisionError:
        raise ValueError("while handling another") from None


def _generated():
    # Frames without source lines: compiled from a string, as templates and `exec` produce them.
    source = "def fail():\n    raise LookupError('from generated code')\nfail()\n"
    exec(compile(source, "<generated>", "exec"))  # noqa: S102 - the code is this file's own


def _raise(exc):
    raise exc


def _recurse(depth):
    return _recurse(depth + 1)


RAISES = {
    "custom": lambda: _raise(CustomError("a custom failure")),
    "no_message": lambda: _raise(NoMessageError()),
    "nested_class": lambda: _raise(Nested.InnerError("inner")),
    "key_error": lambda: {}["the key"],
    "non_ascii": lambda: _raise(ValueError("ünïcödé ✓ 日本語 \U0001f600")),
    "multiline": lambda: _raise(ValueError("first line\nsecond line\r\nthird\ttabbed")),
    "args_tuple": lambda: _raise(ValueError(1, "two", None)),
    "chained": _chained,
    "implicitly_chained": _implicitly_chained,
    "helper_module": _helper_failure,
    "stdlib": lambda: json.loads("{"),
    "generated": _generated,
    "huge_message": lambda: _raise(ValueError("x" * (1024 * 1024))),
    "oversized_message": lambda: _raise(ValueError("x" * (7 * 1024 * 1024))),
    "assertion": lambda: _raise(AssertionError()),
    # Fine escaped; with UTF-8 output neither runtime can encode it, and both die.
    "lone_surrogate": lambda: _raise(ValueError("lone \udcff surrogate")),
}


def raises(event, context):
    RAISES[event["case"]]()


def context_fields(event, context):
    client_context = context.client_context
    client = None if client_context is None else client_context.client
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "tenant_id": getattr(context, "tenant_id", None),
        "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
        "identity_repr": repr(context.identity),
        "client_context_repr": repr(client_context),
        "client_context": None
        if client_context is None
        else {"custom": client_context.custom, "env": client_context.env, "client": repr(client)},
        "client": None if client is None else {name: getattr(client, name) for name in type(client).__slots__},
        "w3c": context.w3c(),
        "context_repr": repr(context),
        "context_type": type(context).__name__,
        "context_attributes": list(vars(context)),
        "context_public": [name for name in dir(context) if not name.startswith("_")],
        "remaining_positive": context.get_remaining_time_in_millis() > 0,
        "remaining_zero": context.get_remaining_time_in_millis() == 0,
        "remaining_type": type(context.get_remaining_time_in_millis()).__name__,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
        "telemetry_fd_env": os.environ.get("_LAMBDA_TELEMETRY_LOG_FD"),
        "event_type": type(event).__name__,
    }


def logs(event, context):
    """Everything a function writes to its log, in one invocation."""
    print("printed line")
    print("multi\nline", "print", sep=" | ")
    sys.stdout.write("written without a newline")
    sys.stdout.write("\n")
    sys.stderr.write("to stderr\n")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        logger.log(level, "at %s: ünï ✓", logging.getLevelName(level))
    for level in (5, 15, 25, 45, 60):
        logger.log(level, "custom level %d", level)
    logger.warning({"a dict": ["as", "the", "message"], "n": 1})
    logger.warning("with extras", extra={"custom": 1, "when": datetime.datetime(2026, 1, 1), "none": None})
    logging.getLogger().error("root logger, multi\nline")
    logging.getLogger("differential.child").warning("child logger")
    try:
        raise CustomError("logged, not raised")
    except CustomError:
        logger.exception("caught it")
    context.log("context log\n")
    context.log("context log without newline")
    context.log({"not": "a string"})
    if event.get("raise"):
        raise CustomError("uncaught ✓")
    # Both runtimes take the variable out of the environment, so that processes the function starts write no frames.
    return {"telemetry_fd_env": os.environ.get("_LAMBDA_TELEMETRY_LOG_FD")}


async def async_echo(event, context):
    return {"async": event}


def generator(event, context):
    yield "streamed "
    yield b"chunks"


def iterator(event, context):
    return map(str.encode, ["streamed ", "chunks"])


def stdout_buffer(event, context):
    if "text" in event:
        print(event["text"])
    else:
        sys.stdout.buffer.write(b"raw bytes\n")


def exits(event, context):
    sys.exit(int(event.get("code", 3)))


def interrupted(event, context):
    raise KeyboardInterrupt


def big_response(event, context):
    return "x" * int(event["size"])


# Where the module was imported: under Managed Instances slipstream imports it once and forks workers from there.
IMPORTED_IN = os.getpid()


def imported_here(event, context):
    return {"imported_here": IMPORTED_IN == os.getpid()}


def crashes(event, context):
    if event.get("crash"):
        os._exit(2)
    return "alive"


def one_argument(event):
    return event


class BadMessageError(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


def bad_message(event, context):
    raise BadMessageError()


NOT_CALLABLE = {"a": "dict"}


def depth(event, context):
    """How deeply the event's first elements nest, counted without recursion."""
    levels = 0
    while isinstance(event, list):
        levels += 1
        event = event[0] if event else None
    return levels
