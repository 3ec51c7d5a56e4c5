"""An I/O-bound `async def` handler: one request to a local upstream that answers after 50 ms, through one
aiohttp session shared by every invocation in the process, as a real function keeps its clients warm."""

import os

import aiohttp

UPSTREAM = os.environ["BENCH_UPSTREAM"]
_session = None


async def handler(event, context):
    global _session
    if _session is None:
        # Created inside the event loop that will run it, on the first invocation.
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with _session.get(UPSTREAM) as response:
        return {"upstream": await response.text(), "status": response.status}
