"""Cold start from a snapshot: the handler's modules served as compiled code from one file.

`slipstream snapshot` (see `slipstream.snapshot`) writes the file at build time. At cold start `install()` reads (or
maps) it at once, checks that it was built for this interpreter, machine, handler, task root and import path, and
puts a finder on `sys.meta_path` ahead of the path-based import system: a module it holds is created from its
compiled code, unmarshalled when imported, with no path scan, no bytecode cache and no compilation, after one `stat`
proves its source unchanged. Anything else falls through to the normal import system. botocore's parsed data files
and service listings, and the compiled form of regular expressions, are served the same way once `botocore.loaders`
and `re` have been imported from the snapshot. `finish()` ends init: it imports what the sample invocation imported
lazily, stops serving modules and lets the garbage collector run again.

This module is on the cold-start path: it imports nothing the interpreter has not loaded already (mmap, for a large
snapshot, apart).

TODO(#6): modules imported before `install` runs (slipstream's own, runpy's under `python -m`) are never served:
shipped without bytecode, they are compiled on every cold start.
TODO(#6): with SLIPSTREAM_FORK_AFTER_INIT=0 the Managed Instances workers import the handler without the snapshot.
"""

from __future__ import annotations

import _imp
import marshal
import os
import sys
from _frozen_importlib import BuiltinImporter, FrozenImporter, ModuleSpec
from _frozen_importlib_external import MAGIC_NUMBER, PathFinder, SourceFileLoader

from slipstream.logs import diag

__all__ = ["MAGIC_NUMBER", "finish", "install", "reseed"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import CodeType, ModuleType
    from typing import Any

    Dep = tuple[str, str, int, int, bytes | None]
    # origin, search locations (packages), what it was built from, offset and length of its code, code digest
    Module = tuple[str, tuple[str, ...] | None, tuple[int, ...], int, int, bytes]

MAGIC = b"\x89slipstream-snapshot\r\n\x1a\n"
FORMAT = 1
DEFAULT_NAME = ".slipstream-snapshot"
ENV_SNAPSHOT = "SLIPSTREAM_SNAPSHOT"
# The key of every digest in a snapshot (`_imp.source_hash`, the keyed SipHash of hash-based .pyc files).
DIGEST_KEY = 0x736C6970
# Entries no listing digest covers: bytecode caches are written beside sources at run time and resolve no import.
UNLISTED = "__pycache__"
_HEAD = len(MAGIC) + 4
_S_IFMT = 0o170000
_S_IFREG = 0o100000
_MAP_FROM = 1 << 20  # smaller snapshots are read: importing mmap costs more than reading them
_NO_COLLECTION = 1 << 30  # a first-generation threshold no init reaches

_active: Snapshot | None = None


def install(handler: str) -> None:
    """Serves imports from the function's snapshot when there is one that fits; never fails the start."""
    global _active
    chosen = os.environ.get(ENV_SNAPSHOT, "")
    if chosen == "0" or _active is not None:
        return
    task_root = task_root_path()
    path = chosen or os.path.join(task_root, DEFAULT_NAME)
    try:
        with open(path, "rb") as f:
            buffer = _read(f)
    except FileNotFoundError:
        if chosen:
            diag(f"snapshot {path} not found ({ENV_SNAPSHOT}); starting without it")
        return
    except OSError as exc:
        diag(f"snapshot {path} ignored: {exc}")
        return

    try:
        snapshot, reason = open_snapshot(path, buffer, handler, task_root)
    except Exception as exc:  # a damaged file must never stop the function from starting
        snapshot, reason = None, f"unreadable ({type(exc).__name__}: {exc})"
    if snapshot is None:
        diag(f"snapshot {path} ignored: {reason}")
        return

    _active = snapshot
    meta_path = sys.meta_path
    meta_path.insert(_position(meta_path), snapshot)

    import gc

    # Nearly all that init allocates lives on (boto3's: 96,000 objects, 708 of them garbage): collections during it
    # would walk them all for nothing. The threshold is raised rather than the collector disabled, so that an init
    # that disables it, or sets its own thresholds, keeps its choice.
    snapshot.thresholds = gc.get_threshold()
    gc.set_threshold(_NO_COLLECTION, *snapshot.thresholds[1:])


def _position(meta_path: list[Any]) -> int:
    """Where the finder goes: ahead of the path-based finder and of the interpreter's own finders before it, which
    only claim names a snapshot cannot hold (built-in and frozen modules; distutils and pip for setuptools' hack),
    so that each served module skips their calls (3 ms of boto3's init); behind any other finder placed ahead
    (the import hooks of APM agents, the logging hook of `slipstream.logs`), which still sees, and may wrap, what
    the snapshot serves."""
    index = meta_path.index(PathFinder) if PathFinder in meta_path else len(meta_path)
    while index > 0:
        finder = meta_path[index - 1]
        if finder is not BuiltinImporter and finder is not FrozenImporter:
            if type(finder).__module__ != "_distutils_hack":
                break
        index -= 1
    return index


def finish(initialised: bool = True) -> None:
    """The end of init: imports what the sample invocation imported lazily (when init succeeded), stops serving
    modules, keeps only botocore's data, logs what was stale, lets the garbage collector run again."""
    snapshot = _active
    if snapshot is None:
        return
    if initialised and snapshot.view is not None:
        snapshot.import_lazy()
    snapshot.release()
    snapshot.report_stale()
    if snapshot.thresholds is not None:
        import gc

        # Moved out of the collector's reach in O(1) instead of traversed: the first collection after init would
        # otherwise walk every object init created, before the first invocation (28 ms for boto3's).
        gc.freeze()
        if gc.get_threshold()[0] == _NO_COLLECTION:
            gc.set_threshold(*snapshot.thresholds)
        snapshot.thresholds = None


def reseed() -> None:
    """After a SnapStart restore: every environment restored from one Lambda snapshot starts with the same
    in-process random state, so the generators that keep one are seeded again from the OS (reseeded on restore)."""
    modules = sys.modules
    random = modules.get("random")
    if random is not None:
        random.seed()
    tempfile = modules.get("tempfile")
    if tempfile is not None and hasattr(tempfile, "_name_sequence"):
        vars(tempfile)["_name_sequence"] = None  # its own Random, created again on first use
    numpy_random = modules.get("numpy.random")
    if numpy_random is not None and hasattr(numpy_random, "seed"):
        numpy_random.seed()
    ssl = modules.get("ssl")
    if ssl is not None and hasattr(ssl, "RAND_add"):
        ssl.RAND_add(os.urandom(48), 48.0)


def _read(f: Any) -> Any:
    """The file's bytes: mapped when large, as a read() copies every byte into fresh memory (about 1 ms per MB
    measured here) where a mapping shares the page cache's pages, touched only where a module is served from."""
    if os.fstat(f.fileno()).st_size < _MAP_FROM:
        return f.read()
    from mmap import ACCESS_READ, mmap

    return mmap(f.fileno(), 0, access=ACCESS_READ)


def task_root_path() -> str:
    return os.path.abspath(os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())


def import_path() -> tuple[str, ...]:
    """`sys.path` as it resolves imports: absolute, without duplicates or entries that do not exist."""
    seen = set()
    found = []
    entries: list[object] = list(sys.path)
    for entry in entries:
        if not isinstance(entry, str):
            continue
        full = os.path.abspath(entry) if entry else os.getcwd()
        if full in seen:
            continue
        seen.add(full)
        try:
            os.stat(full)
        except OSError:
            continue
        found.append(full)
    return tuple(found)


def digest(data: bytes | memoryview) -> bytes:
    return _imp.source_hash(DIGEST_KEY, data)


def listing_digest(path: str, unlisted: Sequence[str]) -> bytes:
    """What a directory holds, as far as imports and botocore's listings can tell: the names in it."""
    names = sorted(name for name in os.listdir(path) if name not in unlisted)
    return digest("\n".join(names).encode("utf-8", "surrogateescape"))


def read_header(buffer: bytes | memoryview) -> tuple[dict[str, Any] | None, str]:
    """The header of a snapshot file, or None and why it is not one."""
    if bytes(buffer[: len(MAGIC)]) != MAGIC:
        return None, "not a slipstream snapshot"
    size = int.from_bytes(buffer[len(MAGIC) : _HEAD], "little")
    if len(buffer) < _HEAD + size:
        return None, "truncated"
    try:
        header = marshal.loads(buffer[_HEAD : _HEAD + size])  # noqa: S302 - the function's own build output
    except (ValueError, EOFError, TypeError):
        return None, "corrupt header"
    if type(header) is not dict or header.get("format") != FORMAT:
        return None, f"written in another format ({header.get('format') if type(header) is dict else '?'})"
    return header, ""


def open_snapshot(path: str, buffer: Any, handler: str | None, task_root: str) -> tuple[Snapshot | None, str]:
    """Checks a snapshot against this process; `handler` None accepts any. Returns it, or None and the reason."""
    header, reason = read_header(buffer)
    if header is None:
        return None, reason
    tag = sys.implementation.cache_tag
    if header["cache_tag"] != tag or header["magic"] != MAGIC_NUMBER:
        return None, f"built for {header['cache_tag']} (bytecode {header['magic']!r}), this is {tag}"
    machine = os.uname().machine
    if header["machine"] != machine:
        return None, f"built on {header['machine']}, this is {machine}"
    if header["optimize"] != sys.flags.optimize:
        return None, f"built at optimization level {header['optimize']}, this runs at {sys.flags.optimize}"
    if handler is not None and header["handler"] != handler:
        return None, f"built for handler {header['handler']}, this is {handler}"
    if header["task_root"] != task_root:
        return None, f"built for task root {header['task_root']}, this is {task_root}"
    if tuple(header["sys_path"]) != import_path():
        return None, "built with another import path (sys.path); rebuild it where the function runs"

    start = _HEAD + int.from_bytes(buffer[len(MAGIC) : _HEAD], "little")
    blobs = start + header["manifest_size"]
    if len(buffer) != blobs + header["blobs_size"]:
        return None, f"truncated or padded: {len(buffer)} bytes, {blobs + header['blobs_size']} expected"
    view = memoryview(buffer)
    if digest(view[start:blobs]) != header["manifest_digest"]:
        return None, "corrupt manifest"
    manifest = marshal.loads(view[start:blobs])  # noqa: S302 - checked against its digest just above
    return Snapshot(path, header, manifest, view[blobs:]), ""


class Snapshot:
    """A snapshot in use: the finder on `sys.meta_path` and the store of botocore's data."""

    def __init__(self, path: str, header: dict[str, Any], manifest: dict[str, Any], view: memoryview) -> None:
        self.path = path
        self.header = header
        self.modules: dict[str, Module] = manifest["modules"]
        self.lazy: tuple[str, ...] = manifest["lazy"]
        self.deps: tuple[Dep, ...] = manifest["deps"]
        self.data: dict[str, tuple[tuple[int, ...], int, int, bytes]] = manifest["data"]
        self.listings: dict[tuple[str, str], tuple[tuple[int, ...], tuple[str, ...]]] = manifest["listings"]
        self.manifest_regexes: tuple[int, int, bytes] | None = manifest["regexes"]
        self.view: memoryview | None = view
        self.by_hash = header["check"] == "hash"
        self.unlisted = (UNLISTED, header["name"])
        self.states: list[bool | None] = [None] * len(self.deps)
        self.stale: list[str] = []
        self.thresholds: tuple[int, ...] | None = None  # the collector's, while init runs with its own

    # The finder

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        entry = self.modules.get(fullname)
        view = self.view
        if entry is None or view is None:
            return None
        try:
            return self.spec(fullname, entry, view)
        except Exception as exc:  # whatever goes wrong here, the import system can still import the module
            self.corrupt(f"cannot serve {fullname}: {type(exc).__name__}: {exc}")
            return None

    def spec(self, fullname: str, entry: Module, view: memoryview) -> Any:
        """The module's spec, as the path-based finder would make it, or None when what it was built from changed."""
        origin, locations, deps, offset, length, expected = entry
        if not self.fresh(deps):
            return None
        blob = view[offset : offset + length]
        if digest(blob) != expected:
            self.corrupt(f"the code of {fullname} does not match its digest")
            return None

        # The loader is the import system's own, so that the module, its spec and `__loader__` are exactly what a
        # normal import gives (resources, `get_source`, reloads); only its first `get_code` comes from here.
        loader = SourceFileLoader(fullname, origin)

        def get_code(name: str) -> CodeType:
            del loader.get_code
            code: CodeType = marshal.loads(blob)  # noqa: S302 - checked against its digest above
            return code

        loader.get_code = get_code  # type: ignore[method-assign,assignment]
        hook = _HOOKS.get(fullname)
        if hook is not None:
            self.hook_exec(loader, hook)

        spec = ModuleSpec(fullname, loader, origin=origin, is_package=locations is not None)
        spec.has_location = True
        if locations is not None:
            spec.submodule_search_locations = list(locations)
        return spec

    def hook_exec(self, loader: SourceFileLoader, hook: Callable[[ModuleType, Snapshot], None]) -> None:
        def exec_module(module: ModuleType) -> None:
            del loader.exec_module
            SourceFileLoader.exec_module(loader, module)
            try:
                hook(module, self)
            except Exception as exc:
                diag(f"snapshot {self.path}: cannot serve {module.__name__}'s data: {type(exc).__name__}: {exc}")

        loader.exec_module = exec_module  # type: ignore[method-assign]

    # Staleness

    def fresh(self, deps: Sequence[int]) -> bool:
        """Whether all an entry was built from is unchanged: each file or directory is checked once."""
        states = self.states
        for index in deps:
            state = states[index]
            if state is None:
                kind, path, size, mtime, expected = self.deps[index]
                if kind != "x" and not self.by_hash:
                    # The common cases inline, one stat each: a module's source, a directory it was found in (
                    # botocore's listings alone depend on hundreds of directories).
                    try:
                        st = os.stat(path)
                    except OSError:
                        state = False
                    else:
                        if kind == "f":
                            state = st.st_size == size and st.st_mtime_ns == mtime and st.st_mode & _S_IFMT == _S_IFREG
                        else:
                            state = st.st_mtime_ns == mtime or _listing_matches(path, self.unlisted, expected)
                else:
                    state = check_dep(kind, path, size, mtime, expected, self.by_hash, self.unlisted)
                states[index] = state
                if not state:
                    self.stale.append(path)
            if not state:
                return False
        return True

    def report_stale(self) -> None:
        if not self.stale:
            return
        shown = ", ".join(self.stale[:3]) + (f" and {len(self.stale) - 3} more" if len(self.stale) > 3 else "")
        diag(
            f"snapshot {self.path} is stale: {shown} changed since it was taken; what depends on them was imported "
            "normally (run `slipstream snapshot` again)"
        )
        self.stale.clear()

    def corrupt(self, reason: str) -> None:
        diag(f"snapshot {self.path} ignored from here: {reason}")
        # Left on sys.meta_path, answering nothing, until `finish`: the import system may be iterating over it.
        self.view = None
        self.data = {}
        self.listings = {}

    # botocore's data

    def load_data(self, key: str) -> Any:
        """The parsed content of a data file botocore loads as `key`, or None when it is not held or stale."""
        entry = self.data.get(key)
        if entry is None:
            return None
        deps, offset, length, expected = entry
        if not self.fresh(deps):
            return None
        blob = self.view[offset : offset + length] if self.view is not None else None
        if blob is None or digest(blob) != expected:
            self.corrupt(f"the data of {key} does not match its digest")
            return None
        from _pickle import loads

        return loads(blob)

    def regexes(self) -> Any:
        """The regular expressions init compiled, as `_sre.compile` takes them, when this `re` made them."""
        entry = self.manifest_regexes
        _sre = sys.modules.get("_sre")  # loaded by `re`, which asks for this
        if entry is None or self.view is None or _sre is None:
            return None
        if self.header["sre_magic"] != _sre.MAGIC or self.header["hexversion"] != sys.hexversion:
            return None
        offset, length, expected = entry
        blob = self.view[offset : offset + length]
        if digest(blob) != expected:
            self.corrupt("the compiled regular expressions do not match their digest")
            return None
        return marshal.loads(blob)  # noqa: S302 - checked against its digest just above

    def listing(self, path: str, type_name: str) -> list[str] | None:
        entry = self.listings.get((path, type_name))
        if entry is None:
            return None
        deps, services = entry
        if not self.fresh(deps):
            return None
        return list(services)

    # The end of init

    def import_lazy(self) -> None:
        for name in self.lazy:
            if name in sys.modules:
                continue
            try:
                __import__(name)
            except Exception as exc:
                # The invocation that imported it will meet the same error, where it belongs.
                diag(f"snapshot {self.path}: importing {name} ahead of the first invocation failed: {exc!r}")

    def release(self) -> None:
        """Stops serving modules (those init did not import fall through from now on); botocore's data stays
        available for the clients invocations create."""
        self.modules = {}
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        view = self.view
        madvise = getattr(view.obj, "madvise", None) if view is not None else None
        if madvise is not None:
            from mmap import MADV_DONTNEED

            # The mapped pages leave the process's resident memory (and a SnapStart snapshot); the few data files
            # read later come back from the page cache.
            madvise(MADV_DONTNEED)


def _listing_matches(path: str, unlisted: Sequence[str], expected: bytes | None) -> bool:
    try:
        return listing_digest(path, unlisted) == expected
    except OSError:
        return False


def check_dep(
    kind: str, path: str, size: int, mtime: int, expected: bytes | None, by_hash: bool, unlisted: Sequence[str]
) -> bool:
    """`f`: a file of that size and mtime (content digest with `--hash`); `d`: a directory holding the same names
    (its mtime first, when trusted); `x`: nothing there."""
    try:
        if kind == "f":
            if not by_hash:
                st = os.stat(path)
                return st.st_size == size and st.st_mtime_ns == mtime and st.st_mode & _S_IFMT == _S_IFREG
            with open(path, "rb") as f:
                data = f.read()
            return len(data) == size and digest(data) == expected
        if kind == "d":
            if not by_hash and os.stat(path).st_mtime_ns == mtime:
                return True
            return listing_digest(path, unlisted) == expected
        if kind == "x":
            os.stat(path)
            return False
    except FileNotFoundError:
        return kind == "x"
    except OSError:
        return False
    return False


def _serve_botocore(module: ModuleType, snapshot: Snapshot) -> None:
    """Serves botocore's JSON data files and its service listing from the snapshot, where they are unchanged."""
    file_loader_class = module.JSONFileLoader
    loader_class = module.Loader
    load_file = file_loader_class.load_file
    list_available_services = loader_class.list_available_services

    def served_load_file(self: Any, file_path: str) -> Any:
        if type(self) is file_loader_class:
            found = snapshot.load_data(file_path)
            if found is not None:
                return found
        return load_file(self, file_path)

    def served_list_available_services(self: Any, type_name: str) -> list[str]:
        # As the method's own `instance_cache` does: one answer per loader.
        key = ("list_available_services", type_name)
        cache = self._cache
        if key in cache:
            return cache[key]  # type: ignore[no-any-return]
        if type(self) is not loader_class or type(self.file_loader) is not file_loader_class:
            return list_available_services(self, type_name)  # type: ignore[no-any-return]
        services: set[str] = set()
        for path in self.search_paths:
            found = snapshot.listing(path, type_name)
            if found is None:
                if os.path.isdir(path):
                    return list_available_services(self, type_name)  # type: ignore[no-any-return]
                continue
            services.update(found)
        result = sorted(services)
        cache[key] = result
        return result

    file_loader_class.load_file = _like(served_load_file, load_file)
    loader_class.list_available_services = _like(served_list_available_services, list_available_services)


def _like(function: Any, original: Any) -> Any:
    """`function` dressed as the method it stands in for, as functools.wraps would (not imported for this)."""
    function.__name__ = original.__name__
    function.__qualname__ = original.__qualname__
    function.__doc__ = original.__doc__
    function.__wrapped__ = original
    return function


def _serve_re(module: ModuleType, snapshot: Snapshot) -> None:
    """Puts the patterns init compiles in `re`'s cache, made from their compiled form: parsing and compiling
    regular expressions is a large part of importing botocore, urllib3 or http.client. A build-time step can prove
    that form constant: it depends only on the pattern, its flags and this interpreter's `re`."""
    table = snapshot.regexes()
    if not table:
        return
    sre_compile = sys.modules["_sre"].compile
    cache = vars(module)["_cache"]
    # Half the cache at most: what init compiles beyond that it compiles anyway, as without a snapshot.
    for pattern, flags, arguments in table[: vars(module)["_MAXCACHE"] // 2]:
        cache[type(pattern), pattern, flags] = sre_compile(pattern, *arguments)


# Run right after the module of that name has been served from the snapshot.
_HOOKS: dict[str, Callable[[ModuleType, Snapshot], None]] = {"botocore.loaders": _serve_botocore, "re": _serve_re}
