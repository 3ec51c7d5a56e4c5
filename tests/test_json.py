"""slipstream's JSON codec against awslambdaric 4.2.2's, differentially.

Results: `_native.dumps` must give the bytes awslambdaric's `Encoder` gives once its `str` is
encoded as UTF-8 (what it sends), for both `ensure_ascii` settings, and every refusal must raise
`MarshalError` with the message awslambdaric puts after "Unable to marshal response: ".

Events: `_native.loads` must build what `simplejson.loads` builds (compared through `repr`, which
shows types, key order, `-0.0` and lone surrogates) and refuse what it refuses, with the same
message.

Intended differences, each asserted on its own:

1. A str with lone surrogates under `ensure_ascii=False`: awslambdaric's encoder returns a str
   that its own `.encode("utf-8")` then fails on, outside its error handling, so the runtime
   dies; slipstream raises `MarshalError` with the `UnicodeEncodeError`'s wording instead. The
   reference below reports that same wording, so the table compares it like any other error.
2. Nesting: events deeper than 10,000 levels are refused with `JSONDecodeError` (simplejson
   raises `RecursionError` past Python's recursion limit); results are refused at Python's
   recursion limit as in awslambdaric, and at 5,000 levels even when that limit is raised. The
   wording at the limit is always "... while encoding a JSON object"; awslambdaric's ending
   depends on where in simplejson's C code the limit falls.
3. A `simplejson.RawJSON` whose `encoded_json` is not a str: simplejson fails inside `str.join`
   with a message naming a chunk index that slipstream has no equivalent of.

`NaN` and `Infinity` tokens in events are refused. simplejson 4 (what awslambdaric's
`simplejson>=3.20.1` resolves to today) refuses them the same way; with simplejson 3.x
awslambdaric decodes them as floats. They are therefore checked on their own, not against the
installed simplejson.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import fractions
import gc
import math
import os
import random
import struct
import subprocess
import sys
import typing
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import simplejson
from awslambdaric import lambda_runtime_marshaller

from slipstream import _native


def _reference_encoder(ensure_ascii: bool) -> Any:
    """awslambdaric's Encoder, which picks `ensure_ascii` from AWS_EXECUTION_ENV."""
    saved = os.environ.get("AWS_EXECUTION_ENV")
    os.environ["AWS_EXECUTION_ENV"] = "AWS_Lambda_python3.11" if ensure_ascii else "AWS_Lambda_python3.12"
    try:
        encoder = lambda_runtime_marshaller.Encoder()
    finally:
        if saved is None:
            del os.environ["AWS_EXECUTION_ENV"]
        else:
            os.environ["AWS_EXECUTION_ENV"] = saved
    assert encoder.ensure_ascii is ensure_ascii
    return encoder


ENCODERS = {True: _reference_encoder(True), False: _reference_encoder(False)}


def reference(value: Any, ensure_ascii: bool) -> bytes | str:
    """What awslambdaric sends for `value`, or the message of the error it reports."""
    try:
        text = ENCODERS[ensure_ascii].encode(value)
        return text.encode("utf-8")  # what post_invocation_result does with the encoded str
    except Exception as exc:
        return f"error: {exc}"


def ours(value: Any, ensure_ascii: bool) -> bytes | str:
    try:
        return _native.dumps(value, ensure_ascii=ensure_ascii)
    except _native.MarshalError as exc:
        assert isinstance(exc, TypeError)
        return f"error: {exc}"


# Values of every kind the encoder dispatches on.


class Str(str):
    def __str__(self) -> str:
        return "custom __str__"


class StrWithEncode(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("the encoder must not call encode()")


class Int(int):
    def __str__(self) -> str:
        return "custom __str__"

    def __repr__(self) -> str:
        return "custom __repr__"


class IntWithInt(int):
    def __int__(self) -> int:
        return 42


class Float(float):
    def __repr__(self) -> str:
        return "custom __repr__"


class FloatWithFloat(float):
    def __float__(self) -> float:
        return 9.5


class Color(enum.IntEnum):
    RED = 5


class Shade(str, enum.Enum):
    DARK = "dark"


class Ratio(float, enum.Enum):
    HALF = 0.5


class Plain(enum.Enum):
    A = 1


Point = collections.namedtuple("Point", "x y")


class Typed(typing.NamedTuple):
    name: str
    tags: list[str]


class HasAsdict:
    def _asdict(self) -> dict[str, Any]:
        return {"from": "_asdict"}


class ListWithAsdict(list):  # type: ignore[type-arg]
    def _asdict(self) -> dict[str, int]:
        return {"won": 1}


class StrWithAsdict(str):
    def _asdict(self) -> dict[str, int]:
        return {"lost": 1}


class AsdictNotDict:
    def _asdict(self) -> list[int]:
        return [1]


class AsdictTypeError:
    def _asdict(self) -> dict[str, int]:
        raise TypeError("not this one")


class AsdictKeyError:
    def _asdict(self) -> dict[str, int]:
        raise KeyError("boom")


class AsdictNotCallable:
    _asdict = 5


class AsdictProperty:
    @property
    def _asdict(self) -> Any:
        raise RuntimeError("property failed")


class Items(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [("from", "items()")]


class ItemsIterator(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return iter([("it", 1)])


class ItemsBad(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [("a", 1, 2)]


class ItemsRaise(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("items broke")


class LenZero(dict):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 0


class IterList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return iter(["from", "__iter__"])


class Tuple(tuple):  # type: ignore[type-arg]
    pass


class Bytes(bytes):
    pass


class Dec(decimal.Decimal):
    pass


class Klass:
    pass


class Disguised:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return int


class Outer:
    class Inner:
        pass


def _cycles() -> dict[str, Any]:
    lst: list[Any] = []
    lst.append(lst)
    dct: dict[str, Any] = {}
    dct["self"] = dct
    deep: list[Any] = [1, {"a": [2]}]
    deep[1]["a"].append(deep)
    inner: list[Any] = []
    point = Point(inner, 2)
    inner.append(point)
    sub = Items()
    sub["x"] = 1

    class SelfAsdict:
        def _asdict(self) -> dict[str, Any]:
            return {"self": self}

    later: list[Any] = [set()]
    later.append(later)
    return {
        "list": lst,
        "dict": dct,
        "nested": deep,
        "namedtuple": point,
        "asdict": SelfAsdict(),
        "error-before-cycle": later,
        "list-in-list": [lst],
    }


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


SURROGATES = "a\ud800b\udc00\udbff\udfff\ud83d\ude00c"
LONG_PLAIN = "the quick brown fox jumps over the lazy dog " * 20

VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "ints": [0, 1, -1, 7, -7, 10, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1],
    "big ints": [2**64, 2**70, -(2**70), 10**100, -(10**300)],
    "floats": [0.0, -0.0, 1.0, -1.5, 0.1, 0.5, 1 / 3, 100.0, 1e15, 1e16, 1.5e16, 123456789012345680.0, 1e22],
    "small floats": [1e-4, 1e-5, 0.000123, 1.5e-7, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308],
    "non-finite": [math.nan, math.inf, -math.inf],
    "strings": ["", "a", "plain", LONG_PLAIN, "tab\there", 'quote " and \\ and /'],
    "short escapes": '\b\f\n\r\t"\\',
    "controls": "".join(chr(c) for c in range(0x20)) + "\x7f",
    "non-ascii": "é ü ß ñ € 中文 日本語 한국어 \u2028\u2029 \ufeff \uffff",
    "astral": "😀 𝄞 \U0010ffff",
    "escape at every offset": ["x" * n + "\n" + "y" * (16 - n) for n in range(17)],
    "non-ascii at every offset": ["x" * n + "é" + "y" * (16 - n) for n in range(17)],
    "lone surrogates": [SURROGATES, "\ud800", "\udfff", StrWithEncode("s\ud800")],
    "surrogates in a key": {"k\udc80": 1},
    "surrogate after text": ["é" * 3, {"é": "x\ud800"}],
    "empty containers": [[], {}, (), [[]], [{}], {"a": []}],
    "nested": {"a": [1, 2.5, "x", None, True, {"b": {"c": []}}], "d": (1, (2, (3,)))},
    "key order": {"z": 1, "a": 2, "m": 3},
    "int keys": {1: "a", -5: "b", 2**70: "c"},
    "bool and none keys": {True: 1, False: 2, None: 3},
    "float keys": {1.5: 1, -0.0: 2, 1e16: 3, math.nan: 4, math.inf: 5, -math.inf: 6},
    "enum keys": {Color.RED: 1, Shade.DARK: 2},
    "subclass keys": {Int(3): 1, IntWithInt(1): 2, Float(2.5): 3, FloatWithFloat(1.0): 4, Str("s"): 5},
    "bytes keys": {b"key": 1, Bytes(b"sub"): 2, b"\xc3\xa9": 3},
    "str subclasses": [Str("value"), Shade.DARK, StrWithAsdict("kept")],
    "int subclasses": [Int(3), IntWithInt(3), Color.RED],
    "float subclasses": [Float(2.5), FloatWithFloat(1.0), Float("nan"), Float("-inf"), Ratio.HALF],
    "bytes": [b"", b"abc", b"\xc3\xa9\xe2\x82\xac", Bytes(b"sub"), b"\n\x00"],
    "bytes top level": b"top",
    "str top level": "top \u00e9",
    "int top level": 2**100,
    "tuples": [(1, 2), Tuple((3, 4)), Tuple()],
    "namedtuples": [Point(1, 2), Point(Point(3, 4), [5]), Typed("n", ["a"])],
    "asdict objects": [HasAsdict(), ListWithAsdict([1, 2])],
    "asdict not callable": AsdictNotCallable(),
    "asdict type error": AsdictTypeError(),
    "dict subclasses": [
        collections.OrderedDict([("b", 1), ("a", 2)]),
        collections.defaultdict(list, {"d": [1]}),
        collections.Counter("aab"),
        Items(a=1),
        Items(),
        ItemsIterator(a=1),
        LenZero(a=1),
    ],
    "list subclasses": [IterList([1, 2, 3]), IterList()],
    "decimals": [
        decimal.Decimal("1.10"),
        decimal.Decimal("1E+2"),
        decimal.Decimal("-0"),
        decimal.Decimal("0E-10"),
        decimal.Decimal("123456789.123456789E+30"),
        decimal.Decimal(2) ** 200,
        Dec("7.50"),
    ],
    "decimal specials": [decimal.Decimal(s) for s in ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity")],
    "decimal in a dict": {"price": decimal.Decimal("19.99"), "sub": Dec("NaN")},
    "raw json": [simplejson.RawJSON('{"raw": [1,2]}'), {"k": simplejson.RawJSON("not json at all é")}],
    "deep but allowed": _nested(200),
    # Refused values: the message must match.
    "set": {1, 2},
    "frozenset": frozenset(),
    "datetime": datetime.datetime(2020, 1, 2, 3, 4, 5),
    "date in a list": [1, datetime.date(2020, 1, 2)],
    "uuid in a dict": {"id": uuid.UUID(int=1)},
    "plain enum": Plain.A,
    "generator": (x for x in range(3)),
    "object": object(),
    "class": Klass,
    "instance": Klass(),
    "nested class": Outer.Inner(),
    "function": len,
    "complex": 1j,
    "bytearray": bytearray(b"x"),
    "memoryview": memoryview(b"x"),
    "range": range(3),
    "user list": collections.UserList([1]),
    "fraction": fractions.Fraction(1, 3),
    "disguised class": Disguised(),
    "asdict not a dict": AsdictNotDict(),
    "asdict raises": AsdictKeyError(),
    "asdict property raises": AsdictProperty(),
    "items not pairs": ItemsBad(a=1),
    "items raises": ItemsRaise(a=1),
    "invalid utf-8 bytes": [b"ok", b"\xff\xfe"],
    "truncated utf-8 bytes": {"k": b"\xc3"},
    "invalid utf-8 bytes key": {b"\x80": 1},
    "tuple key": {(1, 2): 3},
    "decimal key": {decimal.Decimal(1): 1},
    "frozenset key": {frozenset(): 1},
    "class key": {Klass(): 1},
    "nested class key": {Outer.Inner(): 1},
    "datetime key": {datetime.date(2020, 1, 1): 1},
    "int too long for str": 10**5000,
    # awslambdaric finds lone surrogates only when it sends the finished document, after any
    # error the encoding itself raises.
    "surrogates, then a refusal": ["\ud800", {1, 2}],
    "surrogates, then bad bytes": {"a": "x\udfff", "b": b"\xff"},
    "raw json with surrogates": [1, simplejson.RawJSON("\u00e9\ud800\udc01")],
    **{f"cycle: {name}": value for name, value in _cycles().items()},
}


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["ascii", "utf8"])
@pytest.mark.parametrize("name", list(VALUES))
def test_encodes_as_awslambdaric(name: str, ensure_ascii: bool) -> None:
    value = VALUES[name]
    assert ours(value, ensure_ascii) == reference(value, ensure_ascii)


def test_refusals_in_the_table_are_refusals() -> None:
    """The table holds both kinds; this pins which is which, so a reference gone lenient shows."""
    refused = {name for name in VALUES if isinstance(reference(VALUES[name], True), str)}
    expected = {
        name
        for name in VALUES
        if name.startswith("cycle")
        or name
        in {
            "set",
            "frozenset",
            "datetime",
            "date in a list",
            "uuid in a dict",
            "plain enum",
            "generator",
            "object",
            "class",
            "instance",
            "nested class",
            "function",
            "complex",
            "bytearray",
            "memoryview",
            "range",
            "user list",
            "fraction",
            "disguised class",
            "asdict not a dict",
            "asdict raises",
            "asdict property raises",
            "asdict type error",
            "asdict not callable",
            "items not pairs",
            "items raises",
            "invalid utf-8 bytes",
            "truncated utf-8 bytes",
            "invalid utf-8 bytes key",
            "tuple key",
            "decimal key",
            "frozenset key",
            "class key",
            "nested class key",
            "datetime key",
            "int too long for str",
            "surrogates, then a refusal",
            "surrogates, then bad bytes",
            "raw json with surrogates",
        }
    }
    assert refused == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "Object of type set is not JSON serializable"),
        (datetime.datetime(2020, 1, 1), "Object of type datetime is not JSON serializable"),
        (Disguised(), "Object of type int is not JSON serializable"),
        ({(1,): 1}, "keys must be str, int, float, bool or None, not tuple"),
        (AsdictNotDict(), "_asdict() must return a dict, not list"),
        (_cycles()["dict"], "Circular reference detected"),
        (_nested(100_000), "maximum recursion depth exceeded while encoding a JSON object"),
    ],
)
def test_refusal_messages(value: Any, message: str) -> None:
    """A few messages spelled out, so the comparison above cannot pass with both sides wrong."""
    with pytest.raises(_native.MarshalError) as info:
        _native.dumps(value)
    assert str(info.value) == message


def test_coroutine_is_refused_as_awslambdaric_refuses_it() -> None:
    async def handler() -> None:
        pass

    coroutine = handler()
    try:
        for ensure_ascii in (True, False):
            assert ours(coroutine, ensure_ascii) == reference(coroutine, ensure_ascii)
            assert ours(coroutine, ensure_ascii) == "error: Object of type coroutine is not JSON serializable"
    finally:
        coroutine.close()


def test_lone_surrogates_without_ensure_ascii_are_a_marshal_error() -> None:
    """Intended difference 1: awslambdaric's encoder hands back a str its own send cannot encode."""
    text = ENCODERS[False].encode(["é", "x\ud800\udc00"])
    with pytest.raises(UnicodeEncodeError) as info:
        text.encode("utf-8")
    with pytest.raises(_native.MarshalError) as ours_info:
        _native.dumps(["é", "x\ud800\udc00"], ensure_ascii=False)
    assert str(ours_info.value) == str(info.value)
    assert "position 8-9" in str(ours_info.value)
    assert _native.dumps("\ud800", ensure_ascii=True) == b'"\\ud800"'


def test_non_str_raw_json_is_refused() -> None:
    """Intended difference 3."""
    assert isinstance(reference(simplejson.RawJSON(123), True), str)
    with pytest.raises(_native.MarshalError, match="expected str instance, int found"):
        _native.dumps(simplejson.RawJSON(123))


def test_deep_results_are_refused_at_the_recursion_limit() -> None:
    """Both refuse at Python's recursion limit. Where inside simplejson's C code the limit is hit
    decides the end of awslambdaric's message (on 3.12+ often "while calling a Python object"), so
    only the part that does not depend on it is compared."""
    value = _nested(100_000)
    for ensure_ascii in (True, False):
        expected = reference(value, ensure_ascii)
        assert isinstance(expected, str)
        assert expected.startswith("error: maximum recursion depth exceeded while ")
        assert ours(value, ensure_ascii) == "error: maximum recursion depth exceeded while encoding a JSON object"


def test_deep_results_are_refused_even_past_a_raised_recursion_limit() -> None:
    """Intended difference 2: the native encoder stops at 5,000 levels whatever the limit."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000_000)
    try:
        with pytest.raises(_native.MarshalError, match=r"^maximum recursion depth exceeded while encoding"):
            _native.dumps(_nested(20_000))
        cycle: list[Any] = []
        cycle.append(cycle)
        with pytest.raises(_native.MarshalError, match=r"^Circular reference detected$"):
            _native.dumps(cycle)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ bounds C recursion apart from sys.setrecursionlimit")
def test_a_raised_recursion_limit_is_honoured_up_to_5000_levels() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        assert _native.dumps(_nested(4_990)).count(b"[") == 2_495
        with pytest.raises(_native.MarshalError, match=r"^maximum recursion depth exceeded while encoding"):
            _native.dumps(_nested(5_001))
    finally:
        sys.setrecursionlimit(limit)


def test_base_exceptions_pass_through() -> None:
    """awslambdaric only catches Exception; anything else leaves the encoder as it is."""

    class Stop(BaseException):
        pass

    class Stopping:
        def _asdict(self) -> dict[str, int]:
            raise Stop

    with pytest.raises(Stop):
        ENCODERS[True].encode(Stopping())
    with pytest.raises(Stop):
        _native.dumps([Stopping()])


def test_errors_keep_their_cause() -> None:
    with pytest.raises(_native.MarshalError) as info:
        _native.dumps(AsdictKeyError())
    assert isinstance(info.value.__cause__, KeyError)


def test_floats_are_written_as_repr_writes_them() -> None:
    rng = random.Random(20240601)
    values = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(50_000)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(20_000)]
    values += [float(f"{rng.randint(1, 999)}e{e}") for e in range(-330, 310) for _ in range(10)]
    values += [2.0**e for e in range(-1074, 1024)]
    # Doubles with few fraction bits sit exactly halfway between two shortest decimals more often than not
    # at 15 to 17 digits; repr takes the even one.
    values += [rng.getrandbits(53) / 2.0**j for j in range(64) for _ in range(500)]
    for ensure_ascii in (True, False):
        assert ours(values, ensure_ascii) == reference(values, ensure_ascii)


# Random values, encoded both ways.


def _random_str(rng: random.Random) -> str:
    pools = [
        (0x20, 0x7E),
        (0x00, 0x1F),
        (0x7F, 0xFF),
        (0x100, 0xD7FF),
        (0xD800, 0xDFFF),
        (0xE000, 0xFFFF),
        (0x10000, 0x10FFFF),
    ]
    weights = [60, 5, 8, 10, 2, 5, 10]
    chars = []
    for _ in range(rng.choice([0, 1, 3, 8, 20, 70])):
        low, high = rng.choices(pools, weights)[0]
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def _random_number(rng: random.Random) -> Any:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randint(-1000, 1000)
    if kind == 1:
        return rng.randint(-(2**80), 2**80) >> rng.randrange(80)
    if kind == 2:
        return struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
    if kind == 3:
        return rng.choice([0.0, -0.0, 0.5, math.inf, -math.inf, math.nan, 1e16, 1e-7])
    if kind == 4:
        return decimal.Decimal(rng.randint(-(10**20), 10**20)).scaleb(rng.randint(-30, 30))
    if kind == 5:
        return rng.choice([Color.RED, Int(rng.randint(-5, 5)), Float(rng.random())])
    return rng.random() * 10 ** rng.randint(-20, 20)


def _random_key(rng: random.Random) -> Any:
    kind = rng.randrange(10)
    if kind < 6:
        return _random_str(rng)
    if kind == 6:
        return rng.randint(-(2**70), 2**70)
    if kind == 7:
        return rng.choice([True, False, None, Color.RED])
    if kind == 8:
        return _random_str(rng).encode("utf-8", "surrogatepass") if rng.random() < 0.1 else b"bk"
    return struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 5 else 6)
    if kind == 0:
        return _random_str(rng)
    if kind == 1:
        return _random_number(rng)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return _random_str(rng).encode("utf-8", "surrogatepass")
    if kind == 4:
        return rng.choice([{1}, datetime.date(2020, 1, 1), object()]) if rng.random() < 0.02 else 0
    if kind == 5:
        return _random_number(rng)
    size = rng.randrange(6)
    if kind in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(size)]
    if kind == 8:
        return tuple(_random_value(rng, depth + 1) for _ in range(size))
    if kind == 9:
        return Point(_random_value(rng, depth + 1), _random_value(rng, depth + 1))
    return {_random_key(rng): _random_value(rng, depth + 1) for _ in range(size)}


def test_random_values_encode_as_awslambdaric() -> None:
    rng = random.Random(1234)
    refused = 0
    for _ in range(3_000):
        value = _random_value(rng)
        for ensure_ascii in (True, False):
            expected = reference(value, ensure_ascii)
            refused += isinstance(expected, str)
            assert ours(value, ensure_ascii) == expected, value
    # Both outcomes occur, so the comparison covers refusals as well as output.
    assert 100 < refused < 4_000


# Decoding.


def decoded(data: bytes) -> str:
    """`repr` of the decoded value, or the error's type and message."""
    try:
        return repr(_native.loads(data))
    except _native.JSONDecodeError as exc:
        assert isinstance(exc, ValueError)
        return f"error: {exc}"


def reference_decoded(data: bytes) -> str:
    try:
        return repr(simplejson.loads(data))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return f"error: {exc}"


VALID_DOCUMENTS = [
    b"0",
    b"-0",
    b"-0.0",
    b"123",
    b"-123",
    b"1.5",
    b"1e5",
    b"1E+5",
    b"1e-5",
    b"-1.25e-10",
    b"1E400",
    b"-1e400",
    b"1e-400",
    b"0.1",
    b"123456789012345678",
    b"-123456789012345678",
    b"1234567890123456789",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"1180591620717411303424",
    b"-" + b"9" * 300,
    b"12345678901234567890.5",
    b"2.2250738585072014e-308",
    b"true",
    b"false",
    b"null",
    b'""',
    b'"plain"',
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    b'"\\u0000\\u001f\\u007f\\u00e9\\u20AC\\uffff"',
    b'"\\ud83d\\ude00 \\uD834\\uDD1E"',
    b'"\\ud800"',
    b'"\\udc00"',
    b'"\\ud800\\u0041"',
    b'"\\udc00\\ud800"',
    b'"\\ud800\\ud800"',
    b'"\\ud800\\ud83d\\ude00"',
    b'"\\ud83dx"',
    '"raw é € 😀 \u2028"'.encode(),
    b'"\x7f"',
    b"[]",
    b"{}",
    b"[[]]",
    b"[{}]",
    b'{"a": {"b": [1, 2, {"c": null}]}}',
    b'{"z": 1, "a": 2, "m": 3}',
    b'{"a": 1, "a": 2, "b": 3, "a": 4}',
    b" \t\n\r[ 1 , 2 ,\n 3 ] \t\n\r",
    b'{ "a" : 1 , "b" : [ ] }',
    b"\xef\xbb\xbf[1]",
    b'{"\\u00e9": "key escaped", "\xc3\xa9": "key raw"}',
    b'{"k\\ud800": 1}',
    b'[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"name": "c", "id": 3}]',
    b'{"' + b"k" * 100 + b'": 1, "' + b"k" * 64 + b'": 2}',
    b'"' + b"x" * 1000 + b"\\n" + b"y" * 1000 + b'"',
]


@pytest.mark.parametrize("data", VALID_DOCUMENTS, ids=lambda d: d[:40].decode("utf-8", "replace"))
def test_decodes_as_simplejson(data: bytes) -> None:
    expected = reference_decoded(data)
    assert not expected.startswith("error")
    assert decoded(data) == expected


def test_decoded_values_have_simplejson_types() -> None:
    value = _native.loads(b'[1, 1.0, -0, -0.0, 1e2, 99999999999999999999, "s", true, null, {}, []]')
    assert [type(v) for v in value] == [int, float, int, float, float, int, str, bool, type(None), dict, list]
    assert math.copysign(1, value[3]) == -1
    assert value[5] == 99999999999999999999


def test_repeated_keys_decode_to_equal_dicts() -> None:
    """Keys reused across records (the key cache) must never be mixed up, colliding or not."""
    rng = random.Random(99)
    keys = [_random_str(rng).encode("utf-8", "surrogatepass").decode("utf-8", "replace") for _ in range(3_000)]
    keys += ["k" * n for n in range(70)]
    records = [dict.fromkeys(rng.sample(keys, 20), i) for i in range(300)]
    data = simplejson.dumps(records, ensure_ascii=False).encode()
    assert _native.loads(data) == records
    assert [list(r) for r in _native.loads(data)] == [list(r) for r in records]


def test_repeated_short_values_decode_to_equal_strings() -> None:
    """Short string values reused across records (the value cache) must never be mixed up: strings that share
    their length and all their bytes but one, lengths on both sides of the cached limit, escaped and non-ASCII
    ones."""
    rng = random.Random(7)
    values = ["", "a", "ab", "abc", "abcd", "abcdefg", "abcdefgh", "abcdefghi"]
    values += [("x" * n + "y").ljust(size, "x") for size in (5, 8, 9, 17) for n in range(size)]
    values += ["x" * n for n in range(4, 20)]
    values += ["é", "€uro", "tab\there", "\ud800", 'q"uote', "日本語"]
    values += [_random_str(rng).encode("utf-8", "surrogatepass").decode("utf-8", "replace") for _ in range(500)]
    rows = [[rng.choice(values) for _ in range(8)] for _ in range(400)]
    for ensure_ascii in (True, False):
        data = simplejson.dumps(rows, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        assert decoded(data) == reference_decoded(data)


def _record(i: int, rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {"id": i, "sku": f"SKU-{i:04d}", "name": "n", "price": i / 8, "ok": i % 2 == 0}
    kind = rng.randrange(6)
    if kind == 0:
        record["tags"] = ["a"] * (i % 3) if i % 4 else None
    elif kind == 1:
        record["nested"] = {}
    elif kind == 2:
        record = dict(reversed(record.items()))
    elif kind == 3:
        record["extra"] = None
    elif kind == 4:
        record = {"id": i}
    record["last"] = "z"
    return record


def test_records_of_repeated_shapes_decode_as_simplejson() -> None:
    """Dicts of a shape seen before start as a copy of an earlier one (six members or more): same keys in the
    same order, values or nesting of another kind, a repeated key, a shape that changes, must all come out as
    simplejson builds them, down to whether the garbage collector tracks each dict."""
    rng = random.Random(3)
    records = [_record(i, rng) for i in range(300)]
    text = simplejson.dumps(records)
    # Repeated keys: the first place and the last value, in a dict whose shape is otherwise a familiar one.
    text = text.replace('"last": "z"}', '"last": "z", "id": -1}', 5)
    data = f'{{"records": {text}, "again": {text}}}'.encode()
    ours, expected = _native.loads(data), simplejson.loads(data)
    assert repr(ours) == repr(expected)
    assert [list(r) for r in ours["again"]] == [list(r) for r in expected["again"]]
    tracked = [gc.is_tracked(r) for r in ours["records"] + ours["again"]]
    assert tracked == [gc.is_tracked(r) for r in expected["records"] + expected["again"]]
    assert True in tracked and False in tracked


def test_decoding_after_a_failure_starts_clean() -> None:
    """The decoder keeps its caches between calls: a document that fails half way, after filling them, must
    leave nothing behind that the next document could pick up."""
    rng = random.Random(5)
    good = simplejson.dumps([_record(i, rng) for i in range(100)]).encode()
    for bad in (good[: len(good) // 2], good[:-1] + b"x", good + b" 1", good.replace(b'"sku"', b'"sku\\x"', 50)):
        assert decoded(bad) == reference_decoded(bad)
        assert decoded(good) == reference_decoded(good)
    assert decoded(b'{"id": "SKU-0001"}') == reference_decoded(b'{"id": "SKU-0001"}')


@pytest.mark.parametrize("enabled", [True, False])
def test_decoding_leaves_the_garbage_collector_as_it_was(enabled: bool) -> None:
    """The collector is paused while a large document (16 KiB or more) is read, and must be left as it was."""
    large = b"[" + b", ".join([b'{"a": [1, 2], "b": {}}'] * 1_000) + b"]"
    assert len(large) > 16 << 10
    saved = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        for data in (large, b"[1]"):
            _native.loads(data)
            assert gc.isenabled() is enabled
            with pytest.raises(_native.JSONDecodeError):
                _native.loads(data[:-1])
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if saved else gc.disable)()


def test_float_tokens_decode_to_the_doubles_simplejson_reads() -> None:
    """Short float tokens take a fast path (an exact integer scaled by an exact power of ten); every token must
    still give the double Python's float() gives."""
    rng = random.Random(11)
    tokens = []
    for _ in range(3_000):
        digits = str(rng.randint(0, 10 ** rng.randint(1, 20)))
        point = rng.randint(1, len(digits))
        text = digits[:point] + ("." + digits[point:] if point < len(digits) else "")
        if rng.random() < 0.5:
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 30))
        tokens.append(rng.choice(["", "-"]) + text)
    data = ("[" + ", ".join(tokens) + "]").encode()
    assert decoded(data) == reference_decoded(data)


def test_keys_written_again_are_written_alike() -> None:
    """Once a result has shown many dicts, keys already written are copied from the first time (by object):
    escapes, non-ASCII and lone surrogates must come out as awslambdaric writes them, and a lone surrogate's
    position, under `ensure_ascii=False`, must still be the first one's."""
    keys = ["id", 'q"uote', "tab\t", "é", "日本", "k" * 70, "x\ud800y", Str("sub"), "last"]
    rows = [dict.fromkeys(keys, i) for i in range(40)]
    for value in (rows, {"before": "\ud800", "rows": rows}, [{"é": 1}] * 40 + [rows]):
        for ensure_ascii in (True, False):
            assert ours(value, ensure_ascii) == reference(value, ensure_ascii)
    plain = [{key: [i, {key: i}] for key in keys if "\ud800" not in key} for i in range(40)]
    for ensure_ascii in (True, False):
        assert ours(plain, ensure_ascii) == reference(plain, ensure_ascii)


def test_encoding_json_inside_an_encoding() -> None:
    """A `_asdict` that encodes JSON itself, while the encoder is in the middle of a document of many dicts."""

    class Nested:
        def _asdict(self) -> dict[str, Any]:
            inner = [{"id": i, "name": "n"} for i in range(30)]
            return {"inner": _native.dumps(inner).decode(), "id": 1}

    value = [{"id": i, "name": "n", "obj": Nested()} for i in range(30)]
    for ensure_ascii in (True, False):
        assert ours(value, ensure_ascii) == reference(value, ensure_ascii)


INVALID_DOCUMENTS = [
    b"",
    b" ",
    b" \n \n",
    b"[",
    b"[ ",
    b"[1",
    b"[1,",
    b"[1,]",
    b"[1, ]",
    b'[ "a", ]',
    b"[1 2]",
    b"[1,,",
    b"[x",
    b"[-",
    b"[,",
    b"[]]",
    b"{",
    b"{,",
    b'{"a"',
    b'{"a" 1}',
    b'{"a":',
    b'{"a":1',
    b'{"a":1,',
    b'{"a":1,}',
    b'{"a":1, }',
    b'{"a":1, x}',
    b'{"a":1 "b":2}',
    b"{1:2}",
    b"{}}",
    b'"abc',
    b'"a\x01b"',
    b'"\t"',
    b'"x\x1f"',
    b'"\\x"',
    b'"\\U0041"',
    b'"\\\n"',
    '"\\é"'.encode(),
    '"\\\u2028"'.encode(),
    b'"\\u12"',
    b'"\\u12zz"',
    b'"\\u"',
    b'"\\',
    b'"a\\"',
    b'"\\ud800\\u12"',
    b'"\\ud800\\u"',
    b'"\\ud800\\',
    b'"\\ud800\\x"',
    b'["\\ud800 abc',
    b"1 2",
    b"[1] x",
    b"[1]\n\n  x",
    b"[\n]x",
    '"é" x'.encode(),
    '["é", x]'.encode(),
    b"tru",
    b"truex",
    b"nul",
    b"-",
    b"-a",
    b"01",
    b"-01",
    b"1.",
    b"1.e5",
    b"1e",
    b"1e+",
    b"-0.5e",
    b".5",
    b"+1",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xef\xbb\xbf[1,x]",
    b"[1,\n2,\nx]",
    b"\xff",
    b'"\xc3"',
    b'"\xed\xa0\x80"',
    b'{"a": "\xe2\x82"}',
    b"[1] \xff",
    b"[\x80]",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
]


@pytest.mark.parametrize("data", INVALID_DOCUMENTS, ids=repr)
def test_refuses_as_simplejson(data: bytes) -> None:
    expected = reference_decoded(data)
    assert expected.startswith("error: ")
    assert decoded(data) == expected


@pytest.mark.parametrize(
    ("data", "char"),
    [(b"NaN", 0), (b"[Infinity]", 1), (b"-Infinity", 0), (b'{"x": NaN}', 6), (b"[1, -NaN]", 4)],
)
def test_non_finite_tokens_are_refused(data: bytes, char: int) -> None:
    """Asserted apart from simplejson, whose answer depends on its major version (see above)."""
    with pytest.raises(_native.JSONDecodeError) as info:
        _native.loads(data)
    assert str(info.value) == f"Expecting value: line 1 column {char + 1} (char {char})"


def test_decode_error_attributes() -> None:
    data = '{"é": [1,\n  2 x]}'.encode()
    with pytest.raises(_native.JSONDecodeError) as info:
        _native.loads(data)
    with pytest.raises(simplejson.JSONDecodeError) as expected:
        simplejson.loads(data)
    err, ref = info.value, expected.value
    assert (err.msg, err.pos, err.lineno, err.colno) == (ref.msg, ref.pos, ref.lineno, ref.colno)
    assert str(err) == "Expecting ',' delimiter or ']': line 2 column 5 (char 14)"


def test_invalid_utf8_keeps_the_unicode_error_as_cause() -> None:
    with pytest.raises(_native.JSONDecodeError) as info:
        _native.loads(b'["ok", "\xff"]')
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    assert str(info.value) == "'utf-8' codec can't decode byte 0xff in position 8: invalid start byte"


def test_int_digit_limit_is_python_s() -> None:
    data = b"1" * 5_000
    with pytest.raises(ValueError) as expected:
        simplejson.loads(data)
    with pytest.raises(ValueError) as info:
        _native.loads(data)
    assert str(info.value) == str(expected.value)
    assert "4300" in str(info.value)


def test_deep_events_are_refused_not_crashed() -> None:
    """Intended difference 2: 10,000 levels decode, deeper ones are a JSONDecodeError."""
    assert _native.loads(b"[" * 10_000 + b"]" * 10_000) is not None
    with pytest.raises(_native.JSONDecodeError, match=r"^Nesting too deep .* \(char 10000\)$"):
        _native.loads(b"[" * 10_001 + b"]" * 10_001)
    with pytest.raises(_native.JSONDecodeError, match=r"^Nesting too deep"):
        _native.loads(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    with pytest.raises(_native.JSONDecodeError, match=r"^Nesting too deep"):
        _native.loads(b"[" * 1_000_000)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    alphabet = b'[]{}",:\\ \n0123456789.eE+-tfnaulrsu\x00\x1f\x7f\xff\xc3\xa9'
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        action = rng.randrange(3)
        if action == 0 and at < len(data):
            del data[at]
        elif action == 1:
            data.insert(at, rng.choice(alphabet))
        elif at < len(data):
            data[at] = rng.choice(alphabet)
    return bytes(data)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 4)
    if kind == 0:
        return _random_str(rng)
    if kind == 1:
        number = _random_number(rng)
        return number if isinstance(number, int | float) and math.isfinite(number) else 0
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return rng.randint(-(2**70), 2**70)
    if kind in (4, 5):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {_random_str(rng): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_random_documents_decode_as_simplejson() -> None:
    rng = random.Random(4321)
    outcomes = collections.Counter()
    for i in range(4_000):
        value = _random_json(rng)
        ensure_ascii = i % 2 == 0
        text = simplejson.dumps(value, ensure_ascii=ensure_ascii, indent=rng.choice([None, 1]))
        data = text.encode("utf-8", "surrogatepass")
        if i % 4 == 1:
            data = _mutate(data, rng)
        expected = reference_decoded(data)
        outcomes[expected.startswith("error")] += 1
        assert decoded(data) == expected, data
    assert outcomes[True] > 500
    assert outcomes[False] > 2_000


def test_loads_and_dumps_import_nothing() -> None:
    """Cold start: neither json nor decimal may be imported, even when a value is refused."""
    script = """
import sys
from slipstream import _native
before = set(sys.modules)
_native.loads(b'{"a": [1, 2.5, "\\\\u00e9", true, null, 123456789012345678901234567890]}')
_native.dumps({"a": [1, 2.5, "\\u00e9", True, None, 2**80, (1,), b"x"]})
try:
    _native.dumps(object())
except _native.MarshalError:
    pass
try:
    _native.loads(b"[1,")
except _native.JSONDecodeError:
    pass
print(sorted(set(sys.modules) - before))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
