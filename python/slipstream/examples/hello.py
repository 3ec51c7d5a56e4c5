"""The demo's handlers: a plain one, one that fails, and one that streams."""

import logging
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


def handler(event: Any, context: Any) -> dict[str, Any]:
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    logger.warning("greeting %s", name)
    return {
        "message": f"Hello, {name}!",
        "requestId": context.aws_request_id,
        "remainingMs": context.get_remaining_time_in_millis() > 0,
    }


def fails(event: Any, context: Any) -> None:
    raise ValueError(f"cannot handle {event!r}")


def tokens(event: Any, context: Any) -> Iterator[str]:
    """An LLM-style token stream: each token leaves as soon as it is produced."""
    for word in "slipstream streams responses from Python handlers".split():
        time.sleep(0.05)
        yield word + " "
