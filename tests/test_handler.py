"""Handler loading: every way a handler string can fail, compared with awslambdaric's own loader."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from awslambdaric import bootstrap as ric

from slipstream import errors
from slipstream.handler import is_async, load_handler

ASYNC_MODULE = """async def handler(e, c):
    return 1
async def agen(e, c):
    yield b'x'
def sync(e, c):
    return 1
"""

MODULES = {
    "good.py": "def handler(event, context):\n    return 'ok'\n",
    "broken_syntax.py": "def handler(event, context)\n    return 1\n",
    "needs_missing.py": "import definitely_not_installed_xyz\n",
    "pkg/__init__.py": "",
    "pkg/sub/__init__.py": "",
    "pkg/sub/mod.py": "def handler(event, context):\n    return 'deep'\n",
    "asyncmod.py": ASYNC_MODULE,
}


@pytest.fixture
def code_dir(tmp_path: Path) -> Iterator[Path]:
    for name, text in MODULES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def theirs(handler: str) -> tuple[str, str, object]:
    try:
        ric._get_handler(handler)
    except ric.FaultException as exc:
        return exc.exception_type, exc.msg, exc.trace
    raise AssertionError("awslambdaric loaded it")


def ours(handler: str) -> tuple[str, str, object]:
    try:
        load_handler(handler)
    except errors.FaultException as exc:
        return exc.exception_type, exc.msg, exc.trace
    raise AssertionError("slipstream loaded it")


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        ("nodot", "Runtime.MalformedHandlerName"),
        ("sys.handler", "Runtime.BuiltInModuleConflict"),
        ("nosuchmodule.handler", "Runtime.ImportModuleError"),
        ("needs_missing.handler", "Runtime.ImportModuleError"),
        ("broken_syntax.handler", "Runtime.UserCodeSyntaxError"),
        ("good.nosuchfunction", "Runtime.HandlerNotFound"),
        ("pkg/sub/mod.nosuch", "Runtime.HandlerNotFound"),
        ("pkg/sub/nosuch.handler", "Runtime.ImportModuleError"),
        ("sys/x.handler", "Runtime.ImportModuleError"),
    ],
)
def test_load_failure_matches_awslambdaric(code_dir: Path, handler: str, error_type: str) -> None:
    expected = theirs(handler)
    for name in [m for m in sys.modules if m.split(".")[0] in {"good", "pkg", "broken_syntax", "needs_missing"}]:
        del sys.modules[name]
    got = ours(handler)
    assert got == expected
    assert got[0] == error_type


@pytest.mark.parametrize("handler", ["good.handler", "pkg.sub.mod.handler", "pkg/sub/mod.handler"])
def test_load_success_in_dotted_and_slashed_forms(code_dir: Path, handler: str) -> None:
    assert load_handler(handler)(None, None) in {"ok", "deep"}


def test_async_detection_uses_code_flags(code_dir: Path) -> None:
    assert is_async(load_handler("asyncmod.handler"))
    assert is_async(load_handler("asyncmod.agen"))
    assert not is_async(load_handler("asyncmod.sync"))
    assert not is_async(print)
