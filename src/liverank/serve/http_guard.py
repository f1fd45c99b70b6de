"""What the ranking service does with oversized and malformed requests (issue #12).

* :class:`BodySizeLimit`: an ASGI middleware that answers **413** to a request whose body is
  over ``max_bytes``, before the application parses anything: at once when ``Content-Length``
  says so (the body is never read), else as soon as the bytes read so far pass the limit
  (chunked uploads). Counting bytes is the only work it does on the event loop.
* :func:`validation_details`: pydantic errors as the body of a **422**, FastAPI's shape
  (``{"detail": [{"type", "loc", "msg", "input"}]}``) made safe to send: ``input`` is cut to a
  few items / characters (a 422 never echoes a large request back), non-finite floats become
  strings (JSON has no NaN), and at most :data:`MAX_ERRORS` errors are listed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from itertools import islice
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the largest id or epoch-ms time a request may carry (ids and times are int64 everywhere)
INT64_MAX = 2**63 - 1
#: errors listed in one 422 body (the rest are counted)
MAX_ERRORS = 10
#: items of a list / keys of an object shown in an error's ``input``
MAX_INPUT_ITEMS = 10
#: characters of a string shown in an error's ``input`` or ``loc``
MAX_INPUT_CHARS = 100


class BodyTooLarge(Exception):
    """Raised by the limited ``receive`` once a request body passes the limit."""


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413 (module doc)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    def message(self, size: int | None) -> str:
        """The 413's detail; ``size`` is the declared length (None: a chunked body)."""
        got = f"{size:,} bytes" if size is not None else f"more than {self.max_bytes:,} bytes"
        limit = f"{self.max_bytes:,} bytes"
        return f"request body too large: {got}; this service accepts at most {limit}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, self.message(declared))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, self.message(None))


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _send_413(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def validation_details(
    errors: Sequence[dict[str, Any]], loc_prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The ``detail`` list of a 422 for pydantic ``errors`` (module doc); ``loc_prefix`` is
    put in front of each ``loc`` (``("body",)`` for a body validated by hand)."""
    out: list[dict[str, Any]] = []
    for err in errors[:MAX_ERRORS]:
        item: dict[str, Any] = {
            "type": err.get("type", "value_error"),
            "loc": [*loc_prefix, *(_cut(x) if isinstance(x, str) else x for x in err["loc"])],
            "msg": _cut(str(err.get("msg", "")), 300),
        }
        if "input" in err:
            item["input"] = short_input(err["input"])
        if err.get("ctx"):
            item["ctx"] = {str(k): short_input(v, depth=1) for k, v in err["ctx"].items()}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append(
            {
                "type": "too_many_errors",
                "loc": list(loc_prefix),
                "msg": f"{len(errors) - MAX_ERRORS} more errors not shown",
            }
        )
    return out


def short_input(value: Any, depth: int = 0) -> Any:
    """``value`` cut to something small and JSON-safe, for an error body."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return value if value.bit_length() <= 128 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, bytes | bytearray):
        return _cut(bytes(value[: 4 * MAX_INPUT_CHARS]).decode("utf-8", "replace"), size=len(value))
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, list | tuple) and depth == 0:
        items = [short_input(x, depth + 1) for x in value[:MAX_INPUT_ITEMS]]
        if len(value) > MAX_INPUT_ITEMS:
            items.append(f"... {len(value) - MAX_INPUT_ITEMS} more items")
        return items
    if isinstance(value, dict) and depth == 0:
        shown = {
            _cut(str(k), 40): short_input(v, depth + 1)
            for k, v in islice(value.items(), MAX_INPUT_ITEMS)
        }
        if len(value) > MAX_INPUT_ITEMS:
            shown["..."] = f"{len(value) - MAX_INPUT_ITEMS} more keys"
        return shown
    if isinstance(value, list | tuple | dict | set):
        return f"<{type(value).__name__} of {len(value)} items>"
    return _cut(str(value))


def _cut(text: str, limit: int = MAX_INPUT_CHARS, size: int | None = None) -> str:
    size = len(text) if size is None else size
    if size <= limit and len(text) <= limit:
        return text
    return f"{text[:limit]}... ({size:,} characters)"
