"""`slipstream snapshot`: takes, at build time, the snapshot `slipstream.preload` serves cold starts from.

`slipstream snapshot app.handler [--event event.json]` starts the function's init in a child process on the local
emulator, exactly as a cold start runs it, and records every module the path-based import system loaded for it (and
for the sample invocation, when an event is given), in import order, plus the data files botocore parsed. It then
writes them to one file: the modules as compiled code, the data as pickles, the regular expressions init compiled
in their compiled form, each with what it was built from (size and mtime, or a content digest with `--hash`), so
that a changed source is never served.

`slipstream snapshot --check` says whether the snapshot still fits the code beside it: exit 0 valid, 1 stale,
2 missing or unusable (corrupt, or built for another interpreter, machine, handler, task root or import path).

Nothing here runs at cold start: the runtime only imports `slipstream.preload`.
"""

from __future__ import annotations

import marshal
import os
import sys

# The import system's own classes, loaded with the interpreter: importing importlib.machinery would load modules
# the recording child must leave for the function's init to import.
from _frozen_importlib_external import PathFinder, SourceFileLoader

from slipstream import preload

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the recording child imports this module
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

    from slipstream.preload import Dep

_EXIT_VALID, _EXIT_STALE, _EXIT_UNUSABLE = 0, 1, 2
# The child processes start with `-c`, not `-m`: runpy would load modules (functools, contextlib...) before the
# function's init, which then would not be recorded. The working directory leads `sys.path` either way.
_CHILD = [sys.executable, "-c", "import sys; from slipstream.snapshot import _child; sys.exit(_child(sys.argv[1:]))"]


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="slipstream snapshot",
        description="Snapshot a function's init (its modules compiled, botocore's data parsed) to speed up its "
        "cold starts. Run it where the function's code is in place, with the environment the function runs in.",
    )
    parser.add_argument("handler", nargs="?", help="the handler, as `python -m slipstream` takes it (module.function)")
    parser.add_argument(
        "--event",
        metavar="FILE",
        help="a sample event (`-` for stdin) invoked once after init, so "
        "that what the first invocation imports is in the snapshot and imported during init",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help=f"the snapshot file (default $LAMBDA_TASK_ROOT/{preload.DEFAULT_NAME}, or in the current directory)",
    )
    parser.add_argument(
        "--hash",
        action="store_true",
        help="record content digests instead of sizes and mtimes "
        "(for code whose mtimes change on the way to Lambda, as zip packages' do)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only say whether the snapshot is still valid: exit 0 valid, 1 stale, 2 missing or unusable",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long init and the sample invocation may take (default 300)",
    )
    args = parser.parse_args(argv)

    if args.check:
        return check(args.output, args.handler)
    if not args.handler:
        parser.error("the handler is required (module.function)")
    return build(args.handler, args.output, args.event, args.hash, args.timeout)


def default_output(task_root: str) -> str:
    chosen = os.environ.get(preload.ENV_SNAPSHOT, "")
    return chosen if chosen not in {"", "0"} else os.path.join(task_root, preload.DEFAULT_NAME)


def build(handler: str, output: str | None, event_path: str | None, by_hash: bool, timeout: float) -> int:
    """Runs the recording child on the emulator and puts its snapshot in place. Returns the exit code."""
    from slipstream.emulator import Emulator

    task_root = preload.task_root_path()
    output = os.path.abspath(output or default_output(task_root))
    event = None
    if event_path is not None:
        if event_path == "-":
            event = sys.stdin.buffer.read()
        else:
            with open(event_path, "rb") as f:
                event = f.read()

    temp = f"{output}.tmp-{os.getpid()}"
    command = [*_CHILD, "--record", temp, "--name", os.path.basename(output)]
    command += ["--hash"] if by_hash else []
    command += ["--invoke"] if event is not None else []
    command += ["--", handler]
    try:
        with Emulator(timeout=timeout) as emulator:
            emulator.start_runtime(command, env={"LAMBDA_TASK_ROOT": task_root}, cwd=task_root, handler=handler)
            result = None
            code: int | None = None
            try:
                if event is not None:
                    result = emulator.invoke(event, timeout=timeout)
                code = _wait_exit(emulator, timeout)
            except TimeoutError:
                pass  # the sample invocation did not end in time: reported below as a recording that did not
            init_errors = emulator.init_errors()
            log = emulator.output()
    except BaseException:
        _remove(temp)
        raise

    try:
        if init_errors:
            error_type = init_errors[0].header("lambda-runtime-function-error-type") or "Runtime.Unknown"
            message = _error_message(init_errors[0].body)
            _say(log, f"init of {handler} failed with {error_type}: {message}; no snapshot written")
            return 1
        if code != 0 or not os.path.exists(temp):
            how = "did not finish in time" if code is None else f"exited with code {code}"
            _say(log, f"recording {handler} {how}; no snapshot written")
            return 1
        if result is not None and result.kind != "response":
            sys.stderr.write(log)
            _say(
                "",
                f"the sample invocation ended with {result.error_type or result.kind}: "
                f"{_error_message(result.body)}; the snapshot keeps what it imported before that",
            )
        os.replace(temp, output)
    finally:
        _remove(temp)

    with open(output, "rb") as f:
        summary = describe(f.read())
    sys.stdout.write(f"slipstream snapshot: wrote {output}: {summary}\n")
    return 0


def check(output: str | None, handler: str | None) -> int:
    """Checks the snapshot from a child process started as the runtime is, so that the import path compares."""
    import subprocess

    task_root = preload.task_root_path()
    path = os.path.abspath(output or default_output(task_root))
    command = [*_CHILD, "--check-here", path]
    command += ["--", handler] if handler else []
    environment = {**os.environ, "LAMBDA_TASK_ROOT": task_root}
    return subprocess.run(command, cwd=task_root, env=environment, check=False).returncode


def describe(buffer: bytes) -> str:
    header, _ = preload.read_header(buffer)
    if header is None:
        return "unreadable"
    counts = header["counts"]
    size = len(buffer) / 1e6
    return (
        f"{counts['modules']} modules ({counts['lazy']} imported by the sample invocation), {counts['data']} data "
        f"files, {counts['listings']} listings, {counts['regexes']} regular expressions, {size:.1f} MB, checked by "
        f"{header['check']}, for {header['handler']}"
    )


def _wait_exit(emulator: Any, timeout: float) -> int | None:
    import subprocess

    try:
        return int(emulator.process.wait(timeout))
    except subprocess.TimeoutExpired:
        return None


def _error_message(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("errorMessage", ""))
    except (ValueError, AttributeError):
        return body.decode(errors="replace")


def _say(log: str, line: str) -> None:
    if log:
        sys.stderr.write(log if log.endswith("\n") else log + "\n")
    sys.stderr.write(f"slipstream snapshot: {line}\n")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# The child processes


def _child(argv: list[str]) -> int:
    """The children's command line (see `_CHILD`): `--record TEMP [--name N] [--hash] [--invoke] -- HANDLER` or
    `--check-here PATH [-- HANDLER]`. Parsed without argparse, which the recording child must not load before the
    function's init."""
    options: dict[str, str | bool] = {}
    handler = None
    rest = list(argv)
    while rest:
        item = rest.pop(0)
        if item == "--":
            handler = rest.pop(0) if rest else None
            break
        if item in {"--record", "--name", "--check-here"}:
            options[item] = rest.pop(0)
        else:
            options[item] = True
    if "--check-here" in options:
        return check_here(str(options["--check-here"]), handler)
    if handler is None or "--record" not in options:
        sys.stderr.write("slipstream.snapshot: internal entry point, run `slipstream snapshot` instead\n")
        return 2
    name = str(options.get("--name", preload.DEFAULT_NAME))
    return record(handler, str(options["--record"]), name, bool(options.get("--hash")), bool(options.get("--invoke")))


def check_here(path: str, handler: str | None) -> int:
    try:
        with open(path, "rb") as f:
            buffer = f.read()
    except OSError as exc:
        print(f"{path}: missing ({exc.strerror})")
        return _EXIT_UNUSABLE
    try:
        snapshot, reason = preload.open_snapshot(path, buffer, handler, preload.task_root_path())
    except Exception as exc:
        snapshot, reason = None, f"unreadable ({type(exc).__name__}: {exc})"
    if snapshot is None:
        print(f"{path}: unusable: {reason}")
        return _EXIT_UNUSABLE
    stale = [dep[1] for index, dep in enumerate(snapshot.deps) if not snapshot.fresh((index,))]
    if stale:
        print(f"{path}: stale, {len(stale)} of the files and directories it was built from changed:")
        for changed in stale:
            print(f"  {changed}")
        return _EXIT_STALE
    print(f"{path}: valid: {describe(buffer)}")
    return _EXIT_VALID


def record(handler_name: str, temp: str, name: str, by_hash: bool, invoke: bool) -> int:
    """The recording child: the runtime's init under a recording finder, then one invocation when asked."""
    import _sre  # type: ignore[import-not-found]

    from slipstream import _native, logs, runtime
    from slipstream.handler import load_handler

    logs.setup()
    try:
        client = _native.RuntimeClient(runtime.user_agent())
    except _native.ConfigurationError as exc:
        logs.diag(str(exc))
        return 1
    sys_path = preload.import_path()
    recorder = Recorder(by_hash, (preload.UNLISTED, name))
    recorder.install()
    try:
        try:
            handler = load_handler(handler_name)
        except Exception as exc:
            return runtime.report_init_failure(client, exc)

        # Whatever is imported from here on (an `async def` handler's event loop, the first invocation) is
        # imported at the end of init when the snapshot is used.
        recorder.lazy = True
        function = runtime.Runtime(client, handler)
        if invoke:
            function.handle(client.next())
    finally:
        recorder.uninstall()

    header = {
        "format": preload.FORMAT,
        "cache_tag": sys.implementation.cache_tag,
        "magic": preload.MAGIC_NUMBER,  # importlib.util's, without importing that before the init
        "machine": os.uname().machine,
        "optimize": sys.flags.optimize,
        "handler": handler_name,
        "task_root": preload.task_root_path(),
        "sys_path": sys_path,
        "check": "hash" if by_hash else "mtime",
        "name": name,
        "python": sys.version,
        "hexversion": sys.hexversion,
        "sre_magic": _sre.MAGIC,
    }
    write(temp, header, recorder)
    return 0


class Recorder:
    """A finder just ahead of the path-based one: notes each module that finder finds, with where it looked."""

    def __init__(self, by_hash: bool, unlisted: Sequence[str]) -> None:
        self.found: list[tuple[str, str, tuple[str, ...] | None, list[str], bool]] = []
        self.names: set[str] = set()
        self.lazy = False
        self.deps = DepTable(by_hash, unlisted)
        self.data: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self.listings: dict[tuple[str, str], tuple[tuple[int, ...], tuple[str, ...]]] = {}
        self.regexes: list[tuple[str | bytes, int, tuple[Any, ...]]] = []

    def install(self) -> None:
        meta_path = sys.meta_path
        meta_path.insert(meta_path.index(PathFinder) if PathFinder in meta_path else len(meta_path), self)

    def uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or fullname in self.names:
            return spec
        # Only plain source modules: extension modules, bytecode-only and zipped ones, namespace packages and
        # whatever another finder serves stay with the import system.
        if type(spec.loader) is SourceFileLoader and spec.has_location and spec.origin:
            self.names.add(fullname)
            # Copied now: a module may change its spec as it runs (six empties its search locations).
            found = spec.submodule_search_locations
            locations = None if found is None else tuple(found)
            search = list(sys.path if path is None else path)
            self.found.append((fullname, spec.origin, locations, search, self.lazy))
            if fullname == "botocore.loaders":
                self.watch(spec.loader, self.instrument_botocore)
            elif fullname == "re":
                self.watch(spec.loader, self.instrument_re)
        return spec

    def watch(self, loader: Any, instrument: Any) -> None:
        def exec_module(module: ModuleType) -> None:
            del loader.exec_module
            type(loader).exec_module(loader, module)
            instrument(module)

        loader.exec_module = exec_module

    def instrument_re(self, module: Any) -> None:
        """Records each pattern compiled from here on as `_sre.compile` receives it (as `re` makes it from the
        pattern and flags), when nothing else, such as a warning, comes out of compiling it."""
        import _sre
        import warnings

        compiler = getattr(module, "_compiler", None) or module.sre_compile
        original = compiler.compile
        # Debug output, locale-dependent and deprecated template patterns are never served.
        unserved = module.DEBUG | module.LOCALE | vars(module).get("TEMPLATE", 0)
        seen: set[tuple[type, str | bytes, int]] = set()

        def recording_compile(pattern: Any, flags: int = 0) -> Any:
            key = (type(pattern), pattern, flags)
            if type(pattern) not in {str, bytes} or flags & unserved or key in seen or len(seen) >= 512:
                return original(pattern, flags)
            seen.add(key)
            arguments = []
            sre_compile = _sre.compile

            def capture(*given: Any) -> Any:
                arguments.append(given)
                return sre_compile(*given)

            _sre.compile = capture
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    compiled = original(pattern, flags)
            finally:
                _sre.compile = sre_compile
            for warning in caught:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            if not caught and len(arguments) == 1 and arguments[0][0] == pattern:
                _, final_flags, code, groups, groupindex, indexgroup = arguments[0]
                kept = (int(final_flags), [int(op) for op in code], int(groups), dict(groupindex), tuple(indexgroup))
                if sre_compile(pattern, *kept) == compiled:
                    self.regexes.append((pattern, int(flags), kept))
            return compiled

        compiler.compile = recording_compile

    def instrument_botocore(self, module: Any) -> None:
        """Records the data files botocore parses and the service listings it makes, as it makes them."""
        file_loader_class = module.JSONFileLoader
        loader_class = module.Loader
        extensions = tuple(getattr(module, "_JSON_OPEN_METHODS", (".json",)))
        load_file = file_loader_class.load_file
        list_available_services = loader_class.list_available_services

        def recording_load_file(loader: Any, file_path: str) -> Any:
            data = load_file(loader, file_path)
            if data is not None and type(loader) is file_loader_class:
                self.add_data(file_path, extensions, data)
            return data

        def recording_list_available_services(loader: Any, type_name: str) -> Any:
            services = list_available_services(loader, type_name)
            if type(loader) is loader_class and type(loader.file_loader) is file_loader_class:
                self.add_listing(list(loader.search_paths), type_name, extensions, services)
            return services

        file_loader_class.load_file = recording_load_file
        loader_class.list_available_services = recording_list_available_services

    def add_data(self, key: str, extensions: Sequence[str], data: object) -> None:
        if key in self.data:
            return
        # Recorded as the function's import: the runtime imports it too when it serves this data.
        import _pickle

        deps = []
        for extension in extensions:
            path = key + extension
            if os.path.isfile(path):
                deps.append(self.deps.add("f", path))
                break
            if os.path.lexists(path):
                return  # something that is no file shadows the name: too odd to serve
            deps.append(self.deps.add("x", path))
        else:
            return
        # Pickled now, before botocore's callers merge their extras into the result.
        self.data[key] = (tuple(deps), _pickle.dumps(data, protocol=4))

    def add_listing(self, search_paths: list[str], type_name: str, extensions: Sequence[str], services: Any) -> None:
        """One listing per search path that is a directory; kept only when together they give botocore's answer."""
        found: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}
        union: set[str] = set()
        for path in search_paths:
            if not os.path.isdir(path):
                continue
            deps, names = self.list_services(path, type_name, extensions)
            found[path] = (deps, names)
            union.update(names)
        if sorted(union) != list(services):
            return  # botocore lists differently from what this module assumes: leave it to botocore
        for path, entry in found.items():
            self.listings.setdefault((path, type_name), entry)

    def list_services(
        self, path: str, type_name: str, extensions: Sequence[str]
    ) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The services in one search path having a `type_name` file in some API version, as botocore's
        `Loader.list_available_services` finds them, and every directory that answer depends on."""
        deps = [self.deps.add("d", path)]
        names = []
        for service in sorted(os.listdir(path)):
            service_path = os.path.join(path, service)
            if not os.path.isdir(service_path):
                continue
            deps.append(self.deps.add("d", service_path))
            has_type = False
            for version in sorted(os.listdir(service_path)):
                version_path = os.path.join(service_path, version)
                if not os.path.isdir(version_path):
                    continue
                deps.append(self.deps.add("d", version_path))
                base = os.path.join(version_path, type_name)
                has_type = has_type or any(os.path.isfile(base + extension) for extension in extensions)
            if has_type:
                names.append(service)
        return tuple(deps), tuple(names)


class DepTable:
    """What a snapshot's entries were built from, each file or directory once, as `preload.check_dep` reads it."""

    def __init__(self, by_hash: bool, unlisted: Sequence[str]) -> None:
        self.by_hash = by_hash
        self.unlisted = unlisted
        self.table: list[Dep] = []
        self.index: dict[tuple[str, str], int] = {}

    def add(self, kind: str, path: str, content: bytes | None = None, mtime: int = 0) -> int:
        key = (kind, path)
        if key in self.index:
            return self.index[key]
        dep: Dep
        if kind == "f":
            if content is None:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    content = f.read()
                mtime = st.st_mtime_ns
            dep = ("f", path, len(content), mtime, preload.digest(content) if self.by_hash else None)
        elif kind == "d":
            dep = ("d", path, 0, os.stat(path).st_mtime_ns, preload.listing_digest(path, self.unlisted))
        else:
            dep = ("x", path, 0, 0, None)
        self.index[key] = len(self.table)
        self.table.append(dep)
        return self.index[key]

    def add_search(self, search: Sequence[str], where: str) -> list[int] | None:
        """The entries of an import search path up to the one a module was found in: a module put in any of them
        since would shadow it. None when the module's directory is not on the path as given."""
        deps = []
        seen = set()
        for entry in search:
            full = os.path.abspath(entry) if entry else os.getcwd()
            if full in seen:
                continue
            seen.add(full)
            if os.path.isdir(full):
                deps.append(self.add("d", full))
            elif os.path.exists(full):
                deps.append(self.add("f", full))
            else:
                deps.append(self.add("x", full))
            if full == where:
                return deps
        return None


def write(temp: str, header: dict[str, Any], recorder: Recorder) -> None:
    """Compiles every module the function imported and writes the snapshot: magic, header, manifest, blobs."""
    deps = recorder.deps
    blobs = bytearray()
    modules: dict[str, tuple[str, tuple[str, ...] | None, tuple[int, ...], int, int, bytes]] = {}
    lazy = []
    for name, origin, locations, search, imported_lazily in recorder.found:
        if name not in sys.modules:
            continue  # found but never imported (a probe), or its import failed
        directory = os.path.dirname(os.path.abspath(origin))
        where_deps = deps.add_search(search, directory if locations is None else os.path.dirname(directory))
        if where_deps is None:
            continue
        with open(origin, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime_ns
            source = f.read()
        code = compile(source, origin, "exec", dont_inherit=True)
        blob = marshal.dumps(code)
        file_dep = deps.add("f", origin, source, mtime)
        entry_deps = (file_dep, *where_deps)
        modules[name] = (origin, locations, entry_deps, len(blobs), len(blob), preload.digest(blob))
        blobs += blob
        if imported_lazily:
            lazy.append(name)

    data = {}
    for key, (data_deps, blob) in recorder.data.items():
        data[key] = (data_deps, len(blobs), len(blob), preload.digest(blob))
        blobs += blob

    regexes = None
    if recorder.regexes:
        blob = marshal.dumps(tuple(recorder.regexes))
        regexes = (len(blobs), len(blob), preload.digest(blob))
        blobs += blob

    manifest = marshal.dumps(
        {
            "regexes": regexes,
            "modules": modules,
            "lazy": tuple(lazy),
            "deps": tuple(deps.table),
            "data": data,
            "listings": recorder.listings,
        }
    )
    header = {
        **header,
        "manifest_size": len(manifest),
        "manifest_digest": preload.digest(manifest),
        "blobs_size": len(blobs),
        "counts": {
            "modules": len(modules),
            "lazy": len(lazy),
            "data": len(data),
            "listings": len(recorder.listings),
            "regexes": len(recorder.regexes),
        },
    }
    head = marshal.dumps(header)
    with open(temp, "wb") as f:
        f.write(preload.MAGIC + len(head).to_bytes(4, "little") + head)
        f.write(manifest)
        f.write(blobs)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
