"""Payloads the handlers and the harness build alike: deterministic, so the harness knows the exact bytes a correct
runtime answers with. Every document is already in the form awslambdaric's encoder writes (`", "` and `": "`
separators, ASCII only, floats that print as they parse), so a runtime that decodes and re-encodes an event
echoes it byte for byte, and the floor, which echoes raw bytes, answers the same."""

from __future__ import annotations

import json

CHUNK = bytes(range(256)) * 4096  # 1 MiB; the floor streams the same bytes


def record(index: int) -> dict[str, object]:
    """One row of a typical API payload: numbers, strings, booleans, nulls and a nested list."""
    return {
        "id": index,
        "sku": f"SKU-{index:08d}",
        "name": f"Widget number {index}",
        "price": (index % 1000) / 8,
        "in_stock": index % 3 != 0,
        "tags": ["alpha", "beta", "gamma", "delta"][: index % 4 + 1],
        "parent": None if index % 5 else index // 5,
    }


def document(size: int) -> dict[str, object]:
    """`{"records": [...]}` whose encoding is at least `size` bytes long (and at most one record more)."""
    records = []
    length = len('{"records": []}')
    while length < size:
        item = record(len(records))
        length += len(json.dumps(item)) + (2 if records else 0)
        records.append(item)
    return {"records": records}


def encode(value: object) -> bytes:
    """What awslambdaric's encoder, and so slipstream's, writes for these documents."""
    return json.dumps(value).encode()


def cpu_work(rounds: int) -> int:
    """A pure-Python loop the CPU-bound handler runs: arithmetic that holds the GIL throughout."""
    total = 0
    for i in range(rounds):
        total = (total * 31 + i) % 1_000_003
    return total
