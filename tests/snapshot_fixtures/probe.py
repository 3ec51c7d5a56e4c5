"""Runs a handler's init as the runtime does (`python -m probe HANDLER MODULE...`, from the task root), with the
snapshot or without it (SLIPSTREAM_SNAPSHOT=0), then prints, as JSON, what the named modules look like, what their
functions answer and what the snapshot served."""

import importlib
import sys

# Only what the runtime itself has loaded before init: anything else imported here would not come from the snapshot.
from slipstream import preload
from slipstream.handler import load_handler

served = []
data_served = []
regexes_served = []


def spy() -> None:
    """Notes what the snapshot answers, without changing the answers."""
    find_spec = preload.Snapshot.find_spec
    load_data = preload.Snapshot.load_data

    def spied_find_spec(self, fullname, path=None, target=None):
        spec = find_spec(self, fullname, path, target)
        if spec is not None:
            served.append(fullname)
        return spec

    def spied_load_data(self, key):
        found = load_data(self, key)
        if found is not None:
            data_served.append(key)
        return found

    regexes = preload.Snapshot.regexes

    def spied_regexes(self):
        found = regexes(self)
        regexes_served.extend(found or ())
        return found

    preload.Snapshot.find_spec = spied_find_spec
    preload.Snapshot.load_data = spied_load_data
    preload.Snapshot.regexes = spied_regexes


def describe(module):
    import hashlib
    import inspect

    spec = module.__spec__
    locations = spec.submodule_search_locations
    try:
        source = hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    except (OSError, TypeError) as exc:
        source = type(exc).__name__
    loader = module.__loader__
    return {
        "name": module.__name__,
        "file": getattr(module, "__file__", "<unset>"),
        "cached": getattr(module, "__cached__", "<unset>"),
        "package": module.__package__,
        "path": list(module.__path__) if hasattr(module, "__path__") else None,
        "spec": [spec.name, spec.origin, spec.cached, spec.has_location, spec.parent],
        "locations": None if locations is None else list(locations),
        "loader": [type(loader).__module__, type(loader).__qualname__, spec.loader is loader],
        "loader_state": sorted(vars(loader)) if hasattr(loader, "__dict__") else None,
        "source": source,
    }


def results(names):
    import json
    import traceback

    found = {}
    if "json" in names:
        found["json"] = json.dumps({"b": [1, 2.5, None], "a": "é"}, sort_keys=True)
        resources = importlib.import_module("importlib.resources")
        found["json_resource"] = resources.files("json").joinpath("tool.py").read_text()[:200]
    if "email.utils" in names:
        found["email"] = sys.modules["email.utils"].formataddr(("Jane Doe", "jane@example.com"))
    if "xml.etree.ElementTree" in names:
        found["xml"] = sys.modules["xml.etree.ElementTree"].fromstring("<a><b>x</b></a>").find("b").text
    if "http" in names:
        found["http"] = sys.modules["http"].HTTPStatus(418).phrase
    if "logging" in names:
        found["logging"] = sys.modules["logging"].getLevelName(20)
    if "asyncio" in names:
        asyncio = sys.modules["asyncio"]
        found["asyncio"] = asyncio.run(asyncio.sleep(0, result="slept"))
    if "csv" in names:
        found["csv"] = list(sys.modules["csv"].reader(["a,b", "1,2"]))
    if "pkg" in names:
        found["pkg_data"] = sys.modules["pkg"].data_text()
        found["pkg_resource"] = (
            importlib.import_module("importlib.resources").files("pkg").joinpath("data.txt").read_text()
        )
    if "pkg.sub" in names:
        try:
            sys.modules["pkg.sub"].fail()
        except ValueError:
            # The source lines a traceback shows come from the recorded file paths.
            found["traceback"] = traceback.format_exc().splitlines()[-3:]
    if "app_data" in names:
        found["app_data"] = sys.modules["app_data"].handler({}, None)
    if "botocore.loaders" in names:
        import botocore.loaders
        import botocore.session

        loaded = botocore.loaders.Loader().load_service_model("s3", "service-2")
        found["s3_model"] = [type(loaded).__name__, len(loaded["operations"]), sorted(loaded)]
        found["services"] = len(botocore.session.get_session().get_available_services())
        client = sys.modules["app_boto3"].S3
        found["client"] = [client.meta.region_name, sorted(client.meta.service_model.operation_names)[:5]]
    return found


def main() -> None:
    handler, names = sys.argv[1], sys.argv[2:]
    spy()
    preload.install(handler)
    load_handler(handler)
    preload.finish()
    # Patterns in re's cache, each with a hash of its compiled code (the test fixes PYTHONHASHSEED).
    regexes = {repr(key): hash(pattern) for key, pattern in list(sys.modules["re"]._cache.items())}
    prefilled = len(regexes_served)
    modules = {name: describe(importlib.import_module(name)) for name in names}
    import json

    found = results(names)
    print(
        json.dumps(
            {
                "served": served,
                "data": data_served,
                "modules": modules,
                "results": found,
                "re": regexes,
                "prefilled": prefilled,
            }
        )
    )


if __name__ == "__main__":
    main()
