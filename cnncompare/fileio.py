"""Files written whole or not at all: a crash, a full disk or a killed worker mid-write leaves the old file (or
none), never half a JSON document, zip or weights file that a later reader would trust.

One rule for every writer: write `<name>.<token>.tmp` beside the target, then `os.replace` it over the target (atomic
on one file system); on failure the temporary file is removed. Readers and copiers skip `*.tmp` (`runfolder.clean_tmp`
deletes what a killed process left). Standard library only: any module may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_atomic", "is_partial", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` for a writer that needs a path (zipfile, safetensors, numpy); it becomes
    `path` when the block ends without an error. `suffix`: an ending the writer insists on (numpy adds `.npz`)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_partial(path: str | Path) -> bool:
    """A file being written (or left by a crash mid-write): readers and copiers skip it."""
    return Path(path).name.endswith(TMP_SUFFIX)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """`data` into `path`, whole or not at all (text as UTF-8)."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
