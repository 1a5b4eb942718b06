"""What reaches the web server before gradio reads it: a bound on the size of every request body but uploads.

The page and gradio_client send a handler's inputs as a small JSON body (`/gradio_api/queue/join`); files travel
separately (`/gradio_api/upload`, bounded by `launch(max_file_size=…)`). A script can put megabytes into a JSON
field (an 8 MB dropdown value was echoed whole into the log and back, 40 MB of log a second): `BodyLimit` answers
413 with one sentence before anything parses such a body. Pure ASGI (no gradio), installed through
`launch(app_kwargs={"middleware": …})`.
"""

from __future__ import annotations

import json
import logging

__all__ = ["BodyLimit", "MAX_BODY", "MAX_UPLOAD", "clip", "clip_every_log_record"]

MAX_BODY = 256 * 1024  # bytes of a request body that is not an upload: a form's values are a few KB
MAX_UPLOAD = 801 * 2**20  # one upload request: the largest file the app takes (800 MB, VGG19's weights) and its form
EXEMPT = ("/gradio_api/upload", "/upload")  # file uploads: bounded by gradio's max_file_size
# routes the app never uses that write to disk per session id (gradio's deep links save a session's values)
BLOCKED = ("/deep_link",)
TOO_LARGE = (
    "This request is larger than any page of this app sends (256 KB): send files as uploads "
    "(gradio_client.handle_file), and text fields of at most a few hundred characters."
)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes (by its Content-Length, or as it streams in) is answered
    413 with `TOO_LARGE`; upload routes are left to gradio's own limit."""

    def __init__(self, app, limit: int = MAX_BODY, exempt: tuple[str, ...] = EXEMPT):
        self.app, self.limit, self.exempt = app, int(limit), exempt

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope.get("type") == "http" and any(path.endswith(p) for p in BLOCKED):
            await _refuse(send, 404, "Not used by this app.")
            return
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if any(path.endswith(p) for p in self.exempt):  # one file of at most MAX_UPLOAD per request
            await BodyLimit(self.app, MAX_UPLOAD, ())(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _refuse(send)
                    return
        seen = 0
        refused = started = False

        async def bounded():
            nonlocal seen, refused
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body") or b"")
                if seen > self.limit:
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused and not started:
                return
            started = started or message.get("type") == "http.response.start"
            await send(message)

        await self.app(scope, bounded, guarded_send)
        if refused and not started:  # a response already begun is left to end as the app ended it
            await _refuse(send)


async def _refuse(send, status: int = 413, text: str = TOO_LARGE) -> None:
    body = json.dumps({"error": text}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def clip(record: logging.LogRecord, limit: int = 2000) -> logging.LogRecord:
    """The record with its text cut to `limit` characters (and a note of how many were cut)."""
    try:
        text = record.getMessage()
    except Exception:
        return record
    if len(text) > limit:
        record.msg, record.args = text[:limit] + f"… [{len(text) - limit:,} characters cut]", None
    return record


def clip_every_log_record(limit: int = 2000) -> None:
    """Every log record of the process is made clipped (a record factory: loggers of any name, any handler)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "clips", False):
        return

    def factory(*args, **kwargs):
        return clip(make(*args, **kwargs), limit)

    factory.clips = True
    logging.setLogRecordFactory(factory)
