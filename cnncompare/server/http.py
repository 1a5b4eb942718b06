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

__all__ = ["BodyLimit", "MAX_BODY", "ClipLongLogs"]

MAX_BODY = 256 * 1024  # bytes of a request body that is not an upload: a form's values are a few KB
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
        if scope.get("type") != "http" or any(path.endswith(p) for p in self.exempt):
            await self.app(scope, receive, send)
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
        refused = False

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
            if refused:
                return
            await send(message)

        await self.app(scope, bounded, guarded_send)
        if refused:
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


class ClipLongLogs(logging.Filter):
    """A log record whose text is longer than `limit` is cut (a visitor's input never fills the log)."""

    def __init__(self, limit: int = 2000):
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        if len(text) > self.limit:
            record.msg, record.args = text[: self.limit] + f"… [{len(text) - self.limit:,} characters cut]", None
        if record.exc_text and len(record.exc_text) > 4 * self.limit:
            record.exc_text = record.exc_text[: 4 * self.limit] + "… [cut]"
        return True
