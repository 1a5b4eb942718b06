"""Classes made from a camera (or picture by picture): a folder of class folders, the same thing an unpacked
upload is, so it is reported, split, admitted and trained exactly like one (`data.load_dataset` on a folder).

Teachable Machine's idea, kept small: name a class, capture a few frames a second while the camera points at it,
add another class, train. Each picture is stored as a JPEG of at most `SIDE` pixels a side (what a run at the
classroom's sizes reads; a 640x480 frame becomes ~10 KB), so a class of 100 frames is about 1 MB. Who may write
where, and how many bytes, is the caller's to decide (`ui.camera`: the visitor's own data folder, counted in their
ledger before each write); this module only keeps the folder in order.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from .errors import CNNCompareError
from .fileio import write_atomic
from .settings import MIN_PER_CLASS

__all__ = ["Captures", "class_name", "encode", "SIDE", "MAX_CLASSES", "MAX_PER_CLASS", "MIN_TO_TRAIN"]

SIDE = 160  # pixels on the long side: room for the 64-128 px runs of a CPU classroom, small on disk
QUALITY = 85
MAX_CLASSES = 8
MAX_PER_CLASS = 150
MIN_TO_TRAIN = 4 * MIN_PER_CLASS  # per class: 20 % held out for validation must still leave two on each side
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def class_name(text: object) -> str:
    """A class name as typed, checked: it names a folder, so only letters, digits, '-' and '_' (spaces become '_').

    Raises:
        CNNCompareError: empty, too long or other characters, in one sentence.
    """
    name = re.sub(r"\s+", "_", str(text or "").strip())
    if not _NAME.fullmatch(name):
        raise CNNCompareError(
            "Name the class with letters, digits, '-' or '_' (up to 32, starting with a letter or digit), "
            "e.g. 'cup' or 'thumbs_up'."
        )
    return name


def encode(img: Image.Image) -> bytes:
    """A picture as the dataset keeps it: upright (EXIF), RGB, at most `SIDE` pixels a side, JPEG."""
    img = ImageOps.exif_transpose(img).convert("RGB")
    img.thumbnail((SIDE, SIDE))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


@dataclass(frozen=True)
class Frame:
    cls: str
    name: str  # the file's name in its class folder
    path: Path


class Captures:
    """The class folders under `root` (created on first write)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def classes(self) -> dict[str, list[Frame]]:
        """Class -> its pictures, oldest first (classes in name order; an empty class is kept, it was named)."""
        if not self.root.is_dir():
            return {}
        out = {}
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)):
            files = sorted((f for f in d.iterdir() if f.suffix == ".jpg"), key=lambda f: f.name)
            out[d.name] = [Frame(d.name, f.name, f) for f in files]
        return out

    def counts(self) -> dict[str, int]:
        return {name: len(frames) for name, frames in self.classes().items()}

    def add_class(self, name: str) -> str:
        """Create the class `name` (checked); at most `MAX_CLASSES`.

        Raises:
            CNNCompareError: a bad name, or one class too many.
        """
        name = class_name(name)
        have = self.counts()
        if name not in have and len(have) >= MAX_CLASSES:
            raise CNNCompareError(f"At most {MAX_CLASSES} classes: delete one before adding '{name}'.")
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return name

    def room(self, name: str) -> int:
        """How many more pictures class `name` may take."""
        return max(0, MAX_PER_CLASS - self.counts().get(name, 0))

    def add(self, name: str, blob: bytes) -> Frame:
        """Store an encoded picture (`encode`) in class `name`, creating the class if needed.

        Raises:
            CNNCompareError: a bad name, too many classes, or the class is full.
        """
        name = self.add_class(name)
        if not self.room(name):
            raise CNNCompareError(f"Class '{name}' has {MAX_PER_CLASS} pictures, the most it may hold.")
        file = f"{_stamp()}.jpg"
        path = write_atomic(self.root / name / file, blob)
        os.utime(self.root)  # in use: what prunes unused datasets counts from the last picture
        return Frame(name, file, path)

    def remove(self, name: str, file: str | None = None) -> None:
        """Delete one picture of class `name` (`file`: its name as `classes` lists it), or the whole class."""
        frames = self.classes().get(name)
        if frames is None:
            return
        if file is None:
            shutil.rmtree(self.root / name, ignore_errors=True)
            return
        for f in frames:  # only a name the folder lists: nothing else can be named
            if f.name == file:
                f.path.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def ready(self) -> str | None:
        """Why these classes cannot be trained yet, in one sentence (None: they can)."""
        counts = self.counts()
        if len(counts) < 2:
            return "Capture at least two classes (name one, capture it, then name the next)."
        short = [f"{k} ({v})" for k, v in counts.items() if v < MIN_TO_TRAIN]
        if short:
            return f"Each class needs at least {MIN_TO_TRAIN} pictures to train and validate: {', '.join(short)}."
        return None

    def summary(self) -> str:
        """One line: each class with its count."""
        counts = self.counts()
        if not counts:
            return "No classes yet."
        return " · ".join(f"**{k}**: {v}" for k, v in counts.items())


def _stamp() -> str:
    """A file name that sorts by time of capture and never repeats (two frames in one nanosecond still differ)."""
    return f"{time.time_ns()}-{secrets.token_hex(3)}"
