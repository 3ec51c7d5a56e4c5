"""A streamed response: `event["bytes"]` bytes in 1 MiB chunks, the same chunk object every time so the handler
itself costs nothing and the figure is the runtime's."""

from payloads import CHUNK


def handler(event, context):
    left = event["bytes"]
    while left > 0:
        size = min(left, len(CHUNK))
        left -= size
        yield CHUNK if size == len(CHUNK) else CHUNK[:size]
