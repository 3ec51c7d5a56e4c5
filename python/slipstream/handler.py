"""Finding the user's handler from its `module.function` string, failing exactly as awslambdaric fails."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Handler = Callable[..., Any]

# CPython's code flags for `async def` functions and async generators (inspect's names; inspect costs ~5 ms to import).
CO_COROUTINE = 0x0080
CO_ASYNC_GENERATOR = 0x0200


def load_handler(handler: str) -> Handler:
    """Imports the handler's module and returns the handler; raises `FaultException` with a `Runtime.*` type for
    the failures awslambdaric names, and lets any other exception from the module's own code through."""
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as exc:
        raise _fault("MALFORMED_HANDLER_NAME", f"Bad handler '{handler}': {exc}") from None
    # Messages name the module as the handler string spells it; the import needs it dotted.
    dotted_name = module_name.replace("/", ".")
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise _fault("BUILT_IN_MODULE_CONFLICT", f"Cannot use built-in module {module_name} as a handler module")

    import importlib

    try:
        module = importlib.import_module(dotted_name)
    except ImportError as exc:
        raise _fault("IMPORT_MODULE_ERROR", f"Unable to import module '{module_name}': {exc}") from None
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise _fault("USER_CODE_SYNTAX_ERROR", f"Syntax error in module '{module_name}': {exc}", trace) from None
    try:
        function = getattr(module, function_name)
    except AttributeError:
        raise _fault("HANDLER_NOT_FOUND", f"Handler '{function_name}' missing on module '{module_name}'") from None
    return function  # type: ignore[no-any-return]


def is_async(function: object) -> bool:
    """Whether calling `function` gives a coroutine or an async generator, judged from its code flags."""
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    if code is None:
        # The code object of `__call__`, not a callability test.
        code = getattr(getattr(type(function), "__call__", None), "__code__", None)  # noqa: B004
    return code is not None and bool(code.co_flags & (CO_COROUTINE | CO_ASYNC_GENERATOR))


def _fault(kind: str, message: str, trace: list[str] | None = None) -> Exception:
    from slipstream import errors

    return errors.FaultException(getattr(errors, kind), message, trace)
