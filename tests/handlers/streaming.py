"""Streaming handlers the end-to-end tests run: every way a handler can stream, its failures and its sizes."""

import asyncio
import os
import threading
import time

from slipstream.streaming import HttpResponse, stream_response

MIB = 1024 * 1024


def plain(event, context):
    return {"streamed": False}


def tokens(event, context):
    yield "alpha "
    yield b"beta "
    yield bytearray(b"gamma")


async def async_tokens(event, context):
    for token in ("one ", b"two ", "three"):
        await asyncio.sleep(0)
        yield token


class Countdown:
    """A plain iterator, not a generator: `__next__` is all a streamed result needs."""

    def __init__(self, start):
        self.left = start

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            raise StopIteration
        self.left -= 1
        return f"{self.left + 1} "


def iterator(event, context):
    return Countdown(3)


@stream_response
def stream_object(event, stream, context):
    stream.set_content_type("text/plain")
    stream.write("written ")
    stream.write(b"to the stream")
    stream.close()
    # Returning after `close` ends nothing twice.
    return "ignored"


@stream_response
async def stream_object_async(event, stream, context):
    stream.set_content_type("text/csv")
    for row in ("a,b\n", "1,2\n"):
        await asyncio.sleep(0)
        await stream.awrite(row)


def http_response(event, context):
    def body():
        yield "<p>"
        yield b"streamed"
        yield "</p>"

    return HttpResponse(
        body(),
        status_code=201,
        headers={"content-type": "text/html", "x-custom": "yes"},
        cookies=["session=abc; Secure", "theme=dark"],
    )


@stream_response
def http_stream_object(event, stream, context):
    stream.start_http(404, {"content-type": "text/plain"}, ["gone=1"])
    stream.write("not here")


def fails_before_first_byte(event, context):
    raise LookupError("nothing to stream")
    yield b"never"


def fails_after_first_byte(event, context):
    yield b"partial "
    yield b"answer"
    raise KeyError("lost the rest")


@stream_response
def stream_object_fails(event, stream, context):
    stream.write("half")
    raise RuntimeError("stream broke")


def sized(event, context):
    """`event["bytes"]` bytes in chunks of `event["chunk"]` (1 MiB by default), a new object each time."""
    left = event["bytes"]
    chunk = event.get("chunk", MIB)
    index = 0
    while left > 0:
        size = min(left, chunk)
        left -= size
        index += 1
        yield bytes([index % 256]) * size


def paced(event, context):
    """Tokens with a pause before each but the first, as a model generating them would."""
    for index in range(event["tokens"]):
        if index:
            time.sleep(event["pause"])
        yield f"token{index} "


def recorded(event, context):
    """`event["bytes"]` in `event["chunk"]`-byte chunks. A thread writes to `event["progress"]`, every 10 ms, how
    many bytes were produced and how often it ran: the test reads both while the reader is stalled, to see the
    producer paused and the GIL free."""
    chunk = b"x" * event["chunk"]
    produced = [0]
    done = threading.Event()

    def report():
        progress = os.open(event["progress"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        ticks = 0
        try:
            while not done.wait(0.01):
                ticks += 1
                os.pwrite(progress, b"%20d %20d" % (produced[0], ticks), 0)
            os.pwrite(progress, b"%20d %20d" % (produced[0], ticks), 0)
        finally:
            os.close(progress)

    reporter = threading.Thread(target=report)
    reporter.start()
    try:
        while produced[0] < event["bytes"]:
            yield chunk
            produced[0] += len(chunk)
    finally:
        done.set()
        reporter.join()


async def async_sized(event, context):
    """`sized` as an async generator, noting in `event["marker"]` when it was closed."""
    try:
        for index in range(event["bytes"] // MIB):
            yield bytes([index % 256]) * MIB
    finally:
        marker = os.open(event["marker"], os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(marker, b"closed")
        os.close(marker)
