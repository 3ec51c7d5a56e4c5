"""slipstream's benchmark harness: scenarios run against the project's emulator, every runtime under test started
as a real process the way Lambda starts it. `bench/run.py` is the entry point; see `bench/README.md`."""
