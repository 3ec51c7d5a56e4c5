"""An import hook installed before the runtime starts, as APM agents install theirs: it notes every module it finds
through the finders behind it (an agent would wrap the loader to instrument the module)."""

import sys

FOUND = []


class Watcher:
    def find_spec(self, fullname, path=None, target=None):
        for finder in sys.meta_path:
            find_spec = None if finder is self else getattr(finder, "find_spec", None)
            spec = None if find_spec is None else find_spec(fullname, path, target)
            if spec is not None:
                FOUND.append(fullname)
                return spec
        return None


sys.meta_path.insert(0, Watcher())
