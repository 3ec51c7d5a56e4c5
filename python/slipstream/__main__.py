"""`python -m slipstream module.handler` runs a function; `python -m slipstream <command>` runs a tool."""

import sys


def _run() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in {"demo", "bench", "emulator", "snapshot", "help", "--help", "-h"}:
        from slipstream.cli import main as cli_main

        return int(cli_main(sys.argv[1:]))
    from slipstream.runtime import main

    return main(sys.argv)


if __name__ == "__main__":
    sys.exit(_run())
