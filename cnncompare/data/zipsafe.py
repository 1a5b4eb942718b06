"""Safe zip extraction: stream an upload's image members into a fresh folder.

An upload is never touched in place. Members with unsafe paths (absolute, drive letters,
backslashes, "..") and symbolic links, devices and encrypted members are skipped and
reported; the whole zip is refused when it looks like a zip bomb (too many members, too
many bytes in total, or a member that expands more than `MAX_RATIO` times).
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path

from .base import IMAGE_EXTENSIONS, DataError, _is_ignored

__all__ = ["MAX_MEMBERS", "MAX_TOTAL_BYTES", "MAX_RATIO", "RATIO_MIN_BYTES", "MAX_DEPTH", "check_zip", "extract_zip"]

MAX_MEMBERS = 50_000  # zip entries
MAX_TOTAL_BYTES = 2 * 1024**3  # uncompressed size of a zip's members, all together
MAX_RATIO = 100  # uncompressed/compressed size of one zip member
RATIO_MIN_BYTES = 1024**2  # tiny members may compress very well without being bombs
MAX_DEPTH = 16  # folders a member may sit in: class folders need 1-3; 1,500 once broke path handling

_CHUNK = 1024**2


def _open(zip_path: Path) -> zipfile.ZipFile:
    name = zip_path.name
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"'{name}' is not a valid zip file: create it again (e.g. 'Compress' or `zip -r`) and re-upload."
        ) from exc
    except OSError as exc:
        raise DataError(f"Could not read '{name}' ({exc.strerror or exc}); check the file and try again.") from exc


def _checked_members(zf: zipfile.ZipFile, name: str, max_total_bytes: int) -> list[zipfile.ZipInfo]:
    members = [info for info in _zip_members(zf, name) if not info.is_dir()]
    if not members:
        raise DataError(f"'{name}' is empty: put one folder of images per class in the zip.")
    _refuse_bombs(members, name, max_total_bytes)
    return members


def check_zip(zip_path: Path, max_total_bytes: int) -> None:
    """The checks `extract_zip` makes before writing anything (a valid zip, not empty, no bomb), from the zip's
    listing alone: what a zip unpacked earlier must still pass under today's limit.

    Raises:
        DataError: one sentence.
    """
    with _open(zip_path) as zf:
        _checked_members(zf, zip_path.name, max_total_bytes)


def extract_zip(zip_path: Path, dest: Path, max_total_bytes: int) -> tuple[list[tuple[str, str]], int]:
    """Stream the image members of a zip into `dest`; return (skipped members, ignored count)."""
    name = zip_path.name
    with _open(zip_path) as zf:
        members = _checked_members(zf, name, max_total_bytes)
        skipped: list[tuple[str, str]] = []
        ignored = 0
        budget = max_total_bytes
        for info in members:
            parts = _member_parts(info.filename)
            if parts is not None and _is_ignored(parts):
                ignored += 1
                continue
            reason = _unsafe_reason(info, parts)
            if reason is None and Path(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
                reason = "not an image"
            if reason is None:
                reason, written = _extract_member(zf, info, dest.joinpath(*parts), dest, budget, name)
                budget -= written
            if reason is not None:
                skipped.append((info.filename, reason))
        for info in zf.infolist():  # empty folders are kept, so the report can say they hold no images
            parts = _member_parts(info.filename)
            if info.is_dir() and parts and len(parts) <= MAX_DEPTH and not _is_ignored(parts):
                if not stat.S_ISLNK(info.external_attr >> 16):
                    dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
    return skipped, ignored


def _zip_members(zf: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise DataError(
            f"'{name}' has {len(members):,} entries, more than the limit of {MAX_MEMBERS:,}: upload fewer files."
        )
    return members


def _refuse_bombs(members: list[zipfile.ZipInfo], name: str, max_total_bytes: int) -> None:
    """Refuse zips whose headers already announce too much data (checked again while streaming)."""
    total = sum(info.file_size for info in members)
    if total > max_total_bytes:
        raise DataError(
            f"'{name}' expands to {total / 1e6:,.0f} MB, more than the limit of "
            f"{max_total_bytes / 1e6:,.0f} MB: upload a smaller zip."
        )
    for info in members:
        if _too_compressed(info.file_size, info.compress_size):
            ratio = info.file_size / max(info.compress_size, 1)
            raise DataError(
                f"'{name}' looks like a zip bomb ('{info.filename}' expands {ratio:,.0f} times): it was refused."
            )


def _too_compressed(size: int, compressed: int) -> bool:
    return size > RATIO_MIN_BYTES and size > MAX_RATIO * max(compressed, 1)


def _member_parts(filename: str) -> list[str] | None:
    """Path components of a zip member, or None if the name is unsafe to join to a folder."""
    if "\\" in filename or "\x00" in filename or filename.startswith("/") or re.match(r"^[A-Za-z]:", filename):
        return None
    parts = [p for p in filename.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def _unsafe_reason(info: zipfile.ZipInfo, parts: list[str] | None) -> str | None:
    if parts is None:
        return "unsafe path (absolute or outside the upload)"
    if len(parts) > MAX_DEPTH + 1:
        return f"folders nested too deep (more than {MAX_DEPTH})"
    mode = info.external_attr >> 16  # Unix mode bits; the file type is often left out (0)
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # devices, fifos, ...
        return "not a regular file"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def _extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, dest: Path, budget: int, name: str
) -> tuple[str | None, int]:
    """Copy one member with a byte cap; return (skip reason or None, bytes written)."""
    if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces after _member_parts
        return "unsafe path (absolute or outside the upload)", 0
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                # Headers can lie: count what actually comes out of the decompressor.
                if written > budget or written > info.file_size or _too_compressed(written, info.compress_size):
                    raise DataError(
                        f"'{name}' looks like a zip bomb ('{info.filename}' expands beyond its declared size "
                        "or the limits): it was refused."
                    )
                out.write(chunk)
    except DataError:
        raise
    except FileExistsError:
        return "duplicate entry in the zip", 0
    except NotImplementedError:
        target.unlink(missing_ok=True)
        return "unsupported compression method", 0
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error):  # CRC error, truncated zip, ...
        target.unlink(missing_ok=True)
        return "corrupt entry in the zip", 0
    except OSError:  # e.g. a name too long for the disk, or a file where a folder should be
        target.unlink(missing_ok=True)
        return "could not be extracted", 0
    return None, written
