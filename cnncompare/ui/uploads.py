"""File inputs that accept only what a visitor uploaded: no file of the server is reachable by naming it.

What gradio 6.31 does with a file input (checked on the running app):

- An upload lands in gradio's upload folder (`$GRADIO_TEMP_DIR`, else `<tmp>/gradio`) as
  `<folder>/<sha256>/<name>`; the browser and gradio_client then send `{"path": <that path>,
  "meta": {"_type": "gradio.FileData"}}`.
- With `meta`, preprocessing refuses any path outside the upload folder ("not uploaded by a
  user"). `gr.File` also refuses a payload without `meta`.
- `gr.Image` does not: its data model (`ImageData`) does not ask for `meta`, so
  `{"path": "/any/file"}` reaches `Image.preprocess`, which opens that file, and the error
  tells whether it exists, is a folder or is no image: an oracle on the server's files.

So the components here check the path themselves, in `preprocess`, before anything opens it:
it must lie inside the upload folder (after resolving links), else the visitor gets one
sentence saying that only uploads are accepted. A string instead of a file object is taken
as a path and refused the same way (instead of a validation error). Messages name the
upload by its own file name, never by its place on the server.

An image may also arrive inside the request as a `data:` URL, which gradio would decode and
re-encode before any handler or queue sees it (a 590 KB PNG of 12,000 x 12,000 pixels took
13 s and 2 GB): `UploadedImage` refuses it, and reads the pixel count of an upload from its
header (`inference.image_pixels`) before anything decodes it.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

import gradio as gr
import gradio.component_meta
from gradio.data_classes import FileData, GradioRootModel, ImageData
from PIL import Image
from pydantic import model_validator

from ..inference import TooManyPixels, check_pixels
from ..server.paths import upload_folder

__all__ = [
    "UploadedImage",
    "UploadedFile",
    "UploadedFiles",
    "CameraFrame",
    "upload_folder",
    "checked_upload",
    "display_name",
    "NOT_UPLOADED",
]

NOT_UPLOADED = (
    "only files uploaded to this page are accepted: upload the file (or, from the API, pass it with "
    "gradio_client.handle_file); a path on the server is not accepted"
)


def checked_upload(path: str | Path | None, what: str = "The file") -> Path:
    """`path` resolved, if it is a file inside gradio's upload folder.

    Raises:
        gr.Error: anything else (a server path, a folder, a missing file), with the same
        sentence for all of them, so the answer says nothing about the server's files.
    """
    if path is None or str(path).strip() == "":
        raise gr.Error(f"{what}: {NOT_UPLOADED}.", print_exception=False)
    try:
        resolved = Path(str(path)).resolve()
        inside = resolved.is_relative_to(upload_folder()) and resolved.is_file()
    except (OSError, ValueError, RuntimeError):
        inside = False
    if not inside:
        raise gr.Error(f"{what}: {NOT_UPLOADED}.", print_exception=False)
    return resolved


def display_name(path: str | Path | None) -> str:
    """The upload's own file name (gradio keeps it as the last part of the path), for messages."""
    return Path(str(path)).name if path else ""


def _path_object(v: Any) -> Any:
    # A bare string is a path: make it a file object, so that preprocess refuses it in one sentence
    # instead of a validation error.
    if isinstance(v, str):
        return {"path": v}
    if isinstance(v, dict) and not isinstance(v.get("path"), str) and not str(v.get("url") or "").startswith("data:"):
        return {**v, "path": ""}  # no path (e.g. only a URL): refused by preprocess, like any other
    return v


class _ImagePayload(ImageData):
    """gradio's ImageData (same schema, so clients still upload files), taking a bare string as a path."""

    @model_validator(mode="before")
    @classmethod
    def _string_is_path(cls, v: Any) -> Any:
        return _path_object(v)


class _FilePayload(FileData):
    """gradio's FileData (same schema) without its 'meta' demand: preprocess checks the path instead."""

    @model_validator(mode="before")
    @classmethod
    def validate_model(cls, v: Any, info) -> Any:  # replaces FileData's check of 'meta'
        return _path_object(v)


# Gradio writes a .pyi stub next to the module of every component class defined anywhere; these two are plain
# gr.Image / gr.File to the browser, so no stub is written into the package while they are defined.
_write_stub = gradio.component_meta.create_or_modify_pyi
gradio.component_meta.create_or_modify_pyi = lambda *args, **kwargs: None


class UploadedImage(gr.Image):
    """`gr.Image` that opens only uploads (use type="filepath"). An unreadable upload is passed on as its path,
    so the handler can say in its own words that it is no image (naming the file, not the server path)."""

    # No __init__ of its own: gradio sends the browser the parameters of the class's __init__ signature.
    is_template = True  # drawn by the browser as a plain gr.Image
    data_model = _ImagePayload
    max_mpix = 40.0  # set by the page from CNNCOMPARE_MAX_IMAGE_MPIX

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):  # the image itself, inside the request: never decoded
            raise gr.Error(f"The image: {NOT_UPLOADED}.", print_exception=False)
        path = checked_upload(payload.path, "The image")
        try:
            check_pixels(path, self.max_mpix, display_name(path))  # from the header, before any decoding
        except TooManyPixels as err:
            raise gr.Error(str(err), print_exception=False) from None
        except Exception:  # not an image: the handler says so, by the file's name
            return str(path)
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception:  # not an image: the handler says so, by the file's name
            return str(path)


class UploadedFile(gr.File):
    """`gr.File(type="filepath")` for one upload (file_count="single"), refusing any path outside the upload
    folder in one sentence."""

    # No __init__ of its own: gradio sends the browser the parameters of the class's __init__ signature.
    is_template = True  # drawn by the browser as a plain gr.File

    @property
    def data_model(self):
        return _FilePayload

    @data_model.setter
    def data_model(self, value):  # gr.File.__init__ sets FileData (or ListFiles): this one takes a single file
        pass

    def preprocess(self, payload):
        if payload is None:
            return None
        if self.file_count != "single" or self.type != "filepath":
            raise ValueError("UploadedFile takes one file, as a path")
        checked_upload(payload.path, "The file")
        return super().preprocess(payload)


class _FilesPayload(GradioRootModel):
    root: list[_FilePayload]


class UploadedFiles(gr.File):
    """`gr.File(file_count="multiple", type="filepath")`: several uploads at once, each checked like `UploadedFile`
    (all refused, in one sentence, if any one is not an upload)."""

    is_template = True

    @property
    def data_model(self):
        return _FilesPayload

    @data_model.setter
    def data_model(self, value):
        pass

    def preprocess(self, payload):
        if payload is None:
            return None
        if self.file_count != "multiple" or self.type != "filepath":
            raise ValueError("UploadedFiles takes several files, as paths")
        return [str(checked_upload(f.path, "A file")) for f in payload.root]


# A streaming camera sends each frame inside its request, as a JPEG `data:` URL (gradio 6.31: one
# /gradio_api/queue/join per frame, ~6 KB at 320x240, ~50 KB at 640x480): bounded by the body limit
# (`server.http.MAX_BODY`, 256 KB) before anything reads it, and by its pixel count, read from its header, here.
FRAME_TYPES = ("data:image/jpeg;base64,", "data:image/png;base64,", "data:image/webp;base64,")
MAX_FRAME_MPIX = 2.1  # 1920x1080: a camera asked for 640x480 (`CAMERA_OPTIONS`) sends far less
CAMERA_OPTIONS = gr.WebcamOptions(constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}})
NOT_A_FRAME = "only this page's camera frames are accepted here (a JPEG sent by a streaming camera)"


class CameraFrame(gr.Image):
    """A streaming camera's frame (`sources=["webcam"], streaming=True`), as a PIL image: accepted only as a data
    URL of a JPEG, PNG or WebP of at most `MAX_FRAME_MPIX` (read from its header before it is decoded); a path, a
    file of the server included, is refused in one sentence."""

    is_template = True
    data_model = _ImagePayload

    def preprocess(self, payload):
        if payload is None:
            return None
        url = payload.url or ""
        kind = next((t for t in FRAME_TYPES if url.startswith(t)), None)
        if kind is None:
            raise gr.Error(f"The camera: {NOT_A_FRAME}.", print_exception=False)
        try:
            blob = base64.b64decode(url[len(kind) :], validate=True)
            img = Image.open(io.BytesIO(blob))  # the header only
            width, height = img.size
        except Image.DecompressionBombError:  # PIL's own alarm, past ~180 million pixels
            width = height = 10**5
        except (binascii.Error, ValueError, OSError):
            raise gr.Error("The camera sent a frame that is not a readable image.", print_exception=False) from None
        if width * height > MAX_FRAME_MPIX * 1e6:
            raise gr.Error(
                f"The camera's frame is {width}x{height} pixels, more than this page takes ({MAX_FRAME_MPIX:g} "
                "million): choose a smaller camera resolution.",
                print_exception=False,
            )
        try:
            return img.convert("RGB")
        except (OSError, ValueError):
            raise gr.Error("The camera sent a frame that is not a readable image.", print_exception=False) from None


def camera_input(label: str, elem_id: str, height: int = 260) -> CameraFrame:
    """A streaming camera as the page uses it: 640x480 asked for, each frame sent inside its request."""
    return CameraFrame(
        sources=["webcam"], streaming=True, webcam_options=CAMERA_OPTIONS, label=label, height=height, elem_id=elem_id
    )


gradio.component_meta.create_or_modify_pyi = _write_stub
