"""Snapshots (issue #6): `slipstream snapshot` at build time, `slipstream.preload` at cold start.

The functions under test live in tests/snapshot_fixtures/, copied to a temporary task root for each snapshot (a
snapshot names its task root, and some tests change sources). `probe.py` there runs a handler's init as the runtime
does, with or without the snapshot, and describes the modules it imported.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slipstream import preload
from slipstream.emulator import DEFAULT_ENVIRONMENT
from tests.conftest import HANDLERS

FIXTURES = Path(__file__).parent / "snapshot_fixtures"
SNAPSHOT_LINE = "slipstream: snapshot"
STDLIB = ["asyncio", "csv", "email", "email.utils", "http", "json", "logging", "xml.etree", "xml.etree.ElementTree"]
LOCAL = ["app", "pkg", "pkg.sub", "nspkg.part"]
EXTENSION = "_csv"  # csv's accelerator, an extension module on every CPython build with shared modules


def environment(task_root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **DEFAULT_ENVIRONMENT, "LAMBDA_TASK_ROOT": str(task_root)}
    env.pop(preload.ENV_SNAPSHOT, None)
    env.update(extra)
    return env


def take_snapshot(task_root: Path, *arguments: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slipstream", "snapshot", *arguments],
        cwd=task_root,
        env=environment(task_root, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def check(task_root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return take_snapshot(task_root, "--check", *arguments)


def probe(task_root: Path, handler: str, names: list[str], *, snapshot: bool, clean: bool = True, **extra: str) -> Any:
    """What `probe.py` reports, with its stderr; `clean` asserts that the snapshot logged nothing."""
    extra = (
        {"PYTHONHASHSEED": "0", **extra} if snapshot else {"PYTHONHASHSEED": "0", preload.ENV_SNAPSHOT: "0", **extra}
    )
    done = subprocess.run(
        [sys.executable, "-m", "probe", handler, *names],
        cwd=task_root,
        env=environment(task_root, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    if clean:
        assert SNAPSHOT_LINE not in done.stderr, done.stderr
    return {**json.loads(done.stdout), "stderr": done.stderr}


def snapshot_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(SNAPSHOT_LINE)]


def copy_function(parent: Path) -> Path:
    root = parent / "task"
    shutil.copytree(FIXTURES, root)
    (root / "event.json").write_text('{"sample": true}')
    return root


def rewrite_header(source: Path, target: Path, **changes: object) -> None:
    buffer = source.read_bytes()
    head = len(preload.MAGIC) + 4
    size = int.from_bytes(buffer[len(preload.MAGIC) : head], "little")
    header = marshal.loads(buffer[head : head + size])  # noqa: S302 - a snapshot the test took
    header.update(changes)
    new = marshal.dumps(header)
    target.write_bytes(preload.MAGIC + len(new).to_bytes(4, "little") + new + buffer[head + size :])


def module_blob_offset(path: Path, name: str) -> int:
    """Where the compiled code of module `name` starts in the snapshot file."""
    buffer = path.read_bytes()
    header, _ = preload.read_header(buffer)
    assert header is not None
    start = len(preload.MAGIC) + 4 + int.from_bytes(buffer[len(preload.MAGIC) : len(preload.MAGIC) + 4], "little")
    manifest = marshal.loads(buffer[start : start + header["manifest_size"]])  # noqa: S302 - the test's own
    return int(start + header["manifest_size"] + manifest["modules"][name][3])


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A task root with app.handler's snapshot, taken with a sample event. Tests must not change it."""
    root = copy_function(tmp_path_factory.mktemp("snapshotted"))
    done = take_snapshot(root, "app.handler", "--event", str(root / "event.json"))
    assert done.returncode == 0, done.stderr
    assert "1 imported by the sample invocation" in done.stdout, done.stdout
    yield root


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    """A task root of its own, without a snapshot yet."""
    return copy_function(tmp_path)


def test_served_modules_are_what_a_normal_import_gives(snapshotted: Path) -> None:
    names = [*STDLIB, *LOCAL, "nspkg", EXTENSION]
    normal = probe(snapshotted, "app.handler", names, snapshot=False)
    served = probe(snapshotted, "app.handler", names, snapshot=True)

    assert normal["served"] == []
    assert set(STDLIB) | set(LOCAL) <= set(served["served"])
    # The namespace package and the extension module are left to the import system, and still work.
    assert "nspkg" not in served["served"]
    assert EXTENSION not in served["served"]
    # Imported by the sample invocation, so imported at the end of init.
    assert "lazy_mod" in served["served"]

    assert served["modules"] == normal["modules"]
    assert served["results"] == normal["results"]
    assert served["modules"]["pkg"]["loader_state"] == ["name", "path"]
    # The patterns init compiles were in re's cache from the start, compiled exactly as re compiles them.
    assert normal["re"]
    assert served["prefilled"] > 0
    assert served["re"].items() >= normal["re"].items()
    assert served["modules"]["nspkg"]["file"] is None
    assert served["results"]["pkg_resource"] == "resource text of pkg\n"
    assert served["results"]["traceback"][-2].strip() == 'raise ValueError("raised in pkg.sub")'


@pytest.mark.skipif(importlib.util.find_spec("boto3") is None, reason="boto3 is not installed (requirements-bench)")
def test_boto3_and_its_data_files_served_as_normally_loaded(tmp_path: Path) -> None:
    root = copy_function(tmp_path)
    done = take_snapshot(root, "app_boto3.handler")
    assert done.returncode == 0, done.stderr
    names = ["boto3", "botocore", "botocore.loaders", "botocore.session", "app_boto3"]

    normal = probe(root, "app_boto3.handler", names, snapshot=False)
    served = probe(root, "app_boto3.handler", names, snapshot=True)

    assert {"boto3", "botocore", "botocore.loaders", "app_boto3"} <= set(served["served"])
    assert any(key.endswith("/s3/2006-03-01/service-2") for key in served["data"]), served["data"]
    assert any(key.endswith("/endpoints") for key in served["data"]), served["data"]
    assert served["modules"] == normal["modules"]
    assert served["results"] == normal["results"]
    assert served["re"].items() >= normal["re"].items()
    assert served["results"]["s3_model"][0] == "OrderedDict"


@pytest.mark.skipif(
    importlib.util.find_spec("botocore") is None, reason="botocore is not installed (requirements-bench)"
)
def test_changed_data_files_and_listings_are_read_again(tmp_path: Path) -> None:
    root = copy_function(tmp_path)
    data = root / "data"
    assert take_snapshot(root, "app_data.handler", AWS_DATA_PATH=str(data)).returncode == 0

    served = probe(root, "app_data.handler", ["app_data"], snapshot=True, AWS_DATA_PATH=str(data))
    assert str(data / "slipstream-test-data") in served["data"]
    first = served["results"]["app_data"]
    assert (first["data"]["version"], first["test_services"]) == (1, ["slipstreamtest"])

    (data / "slipstream-test-data.json").write_text('{"version": 22, "items": []}')
    (data / "slipstreamtest2" / "2021-01-01").mkdir(parents=True)
    (data / "slipstreamtest2" / "2021-01-01" / "service-2.json").write_text("{}")
    changed = probe(root, "app_data.handler", ["app_data"], snapshot=True, clean=False, AWS_DATA_PATH=str(data))
    normal = probe(root, "app_data.handler", ["app_data"], snapshot=False, AWS_DATA_PATH=str(data))

    assert str(data / "slipstream-test-data") not in changed["data"]
    assert changed["results"] == normal["results"]
    assert changed["results"]["app_data"]["data"]["version"] == 22
    assert changed["results"]["app_data"]["test_services"] == ["slipstreamtest", "slipstreamtest2"]
    [line] = snapshot_lines(changed["stderr"])
    assert "stale" in line


def test_function_with_a_snapshot_answers_invocations(start_function: Any, snapshotted: Path) -> None:
    function = start_function("app.handler", cwd=snapshotted)
    for number in range(3):
        result = function.invoke({"n": number})
        assert result.kind == "response", function.output()
        # logging, served from the snapshot, was configured as the runtime configures it.
        assert f"\t{result.request_id}\tlogged from the handler" in function.output()
        assert json.loads(result.body) == {
            "served": True,
            "gc_paused": True,
            "gc_now": True,
            "preimported": True,
            "value": 1,
            "lazy": "lazy",
            "event": {"n": number},
        }
    assert snapshot_lines(function.stderr()) == []

    without = start_function("app.handler", cwd=snapshotted, env={preload.ENV_SNAPSHOT: "0"})
    answer = json.loads(without.invoke({"n": 0}).body)
    assert (answer["served"], answer["gc_paused"], answer["preimported"]) == (False, False, False)


def test_collector_left_as_an_init_that_disabled_it_wants(start_function: Any, task_root: Path) -> None:
    import gc

    assert take_snapshot(task_root, "gc_off.handler").returncode == 0
    function = start_function("gc_off.handler", cwd=task_root)
    assert json.loads(function.invoke({}).body) == {"enabled": False, "threshold": gc.get_threshold()[0]}
    assert snapshot_lines(function.stderr()) == []


def test_import_hooks_placed_ahead_still_see_served_modules(start_function: Any, task_root: Path) -> None:
    hooks = {"PYTHONPATH": os.pathsep.join(filter(None, [str(task_root / "hooks"), os.environ.get("PYTHONPATH")]))}
    assert take_snapshot(task_root, "app_hooked.handler", **hooks).returncode == 0
    function = start_function("app_hooked.handler", cwd=task_root, env=hooks)
    answer = json.loads(function.invoke({}).body)
    assert answer == {"served": True, "hook_saw": ["json", "pkg", "pkg.sub"]}, function.output()
    assert snapshot_lines(function.stderr()) == []


def test_managed_instances_workers_fork_from_the_preloaded_parent(start_function: Any, snapshotted: Path) -> None:
    function = start_function("app.handler", cwd=snapshotted, max_concurrency=2)
    answer = json.loads(function.invoke({}).body)
    assert (answer["served"], answer["preimported"]) == (True, True), function.output()
    assert snapshot_lines(function.stderr()) == []


def test_without_a_sample_event_first_invocation_imports_stay_lazy(start_function: Any, task_root: Path) -> None:
    done = take_snapshot(task_root, "app.handler")
    assert done.returncode == 0, done.stderr
    assert "(0 imported by the sample invocation)" in done.stdout

    answer = json.loads(start_function("app.handler", cwd=task_root).invoke({}).body)
    assert (answer["served"], answer["preimported"]) == (True, False)


def test_changed_source_is_imported_normally_with_one_warning(start_function: Any, task_root: Path) -> None:
    assert take_snapshot(task_root, "app.handler").returncode == 0
    assert check(task_root).returncode == 0
    sub = task_root / "pkg" / "sub.py"
    sub.write_text(sub.read_text().replace("VALUE = 1", "VALUE = 2"))

    function = start_function("app.handler", cwd=task_root)
    answer = json.loads(function.invoke({}).body)
    assert (answer["served"], answer["value"]) == (True, 2)
    [line] = snapshot_lines(function.stderr())
    assert "stale" in line
    assert str(sub) in line

    stale = check(task_root)
    assert stale.returncode == 1
    assert str(sub) in stale.stdout


def test_hash_check_ignores_mtimes_and_sees_content(task_root: Path) -> None:
    assert take_snapshot(task_root, "app.handler", "--hash").returncode == 0
    sub = task_root / "pkg" / "sub.py"
    stat = sub.stat()

    os.utime(sub, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    assert check(task_root).returncode == 0

    # Same size, same mtime, other content: only a digest tells.
    sub.write_text(sub.read_text().replace("VALUE = 1", "VALUE = 3"))
    os.utime(sub, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert check(task_root).returncode == 1


def _truncated(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[:-1000])


def _garbage(source: Path, target: Path) -> None:
    target.write_bytes(os.urandom(4096))


def _corrupt_code(source: Path, target: Path) -> None:
    # The handler's own module: the first one init imports.
    buffer = bytearray(source.read_bytes())
    offset = module_blob_offset(source, "app") + 20
    buffer[offset : offset + 8] = bytes(b ^ 0xFF for b in buffer[offset : offset + 8])
    target.write_bytes(bytes(buffer))


@pytest.mark.parametrize(
    ("damage", "handler", "reason"),
    [
        (_truncated, "app.handler", "truncated"),
        (_garbage, "app.handler", "not a slipstream snapshot"),
        (_corrupt_code, "app.handler", "the code of app does not match its digest"),
        (lambda s, t: rewrite_header(s, t, cache_tag="cpython-29"), "app.handler", "built for cpython-29"),
        (lambda s, t: rewrite_header(s, t, machine="s390x"), "app.handler", "built on s390x"),
        (lambda s, t: rewrite_header(s, t, task_root="/var/elsewhere"), "app.handler", "built for task root"),
        (shutil.copyfile, "app.other", "built for handler app.handler, this is app.other"),
    ],
    ids=["truncated", "garbage", "corrupt-code", "cache-tag", "machine", "task-root", "other-handler"],
)
def test_unusable_snapshot_is_ignored_with_one_log_line(
    start_function: Any, snapshotted: Path, tmp_path: Path, damage: Any, handler: str, reason: str
) -> None:
    damaged = tmp_path / "damaged-snapshot"
    damage(snapshotted / preload.DEFAULT_NAME, damaged)

    function = start_function(handler, cwd=snapshotted, env={preload.ENV_SNAPSHOT: str(damaged)})
    result = function.invoke({"n": 1})
    assert result.kind == "response", function.output()
    if handler == "app.handler":
        assert json.loads(result.body)["event"] == {"n": 1}
    [line] = snapshot_lines(function.stderr())
    assert reason in line, line


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [("failing.handler", "Runtime.ImportModuleError"), ("app.missing", "Runtime.HandlerNotFound")],
)
def test_snapshot_of_a_failing_init_writes_nothing(task_root: Path, handler: str, error_type: str) -> None:
    done = take_snapshot(task_root, handler)
    assert done.returncode == 1
    assert f"failed with {error_type}" in done.stderr
    assert not (task_root / preload.DEFAULT_NAME).exists()
    assert not [p for p in task_root.iterdir() if p.name.startswith(preload.DEFAULT_NAME)]


def test_check_exit_codes(task_root: Path) -> None:
    missing = check(task_root)
    assert missing.returncode == 2
    assert "missing" in missing.stdout

    assert take_snapshot(task_root, "app.handler").returncode == 0
    valid = check(task_root, "app.handler")
    assert valid.returncode == 0, valid.stdout
    assert check(task_root, "app.other").returncode == 2

    (task_root / preload.DEFAULT_NAME).write_bytes(b"\x89slipstream-snapshot\r\n\x1a\n\xff\xff")
    assert check(task_root).returncode == 2


def test_snapstart_hooks_keep_awslambdaric_order_with_a_snapshot(start_function: Any, tmp_path: Path) -> None:
    output = tmp_path / "snapstart-snapshot"
    done = take_snapshot(HANDLERS, "snapstart.handler", "--output", str(output))
    assert done.returncode == 0, done.stderr

    function = start_function("snapstart.handler", snap_start=True, env={preload.ENV_SNAPSHOT: str(output)})
    result = function.invoke({})
    assert json.loads(result.body) == ["before-2", "before-1", "after-1", "after-2"]
    kinds = [r.kind for r in function.emulator.records()]
    assert kinds.index("restore_next") < kinds.index("next")
    assert snapshot_lines(function.stderr()) == []


def test_random_is_seeded_again_after_a_snapstart_restore(start_function: Any, snapshotted: Path) -> None:
    import random

    function = start_function(
        "snapstart_random.handler", cwd=snapshotted, snap_start=True, env={preload.ENV_SNAPSHOT: "0"}
    )
    answer = json.loads(function.invoke({}).body)
    assert answer["calls"] == ["before", "after"]
    assert answer["random"] != random.Random(1234).random()


def test_preloader_start_up_imports_nothing_new() -> None:
    code = (
        "import sys; before = set(sys.modules); from slipstream import preload; "
        "preload.install('app.handler'); print(sorted(set(sys.modules) - before))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "LAMBDA_TASK_ROOT": str(FIXTURES)},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert "slipstream.preload" in loaded
    assert not loaded & {"importlib.util", "importlib.resources", "pathlib", "json", "typing", "gc", "_pickle"}
