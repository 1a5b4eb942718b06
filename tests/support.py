"""What the tests, the screenshot script and the load test share: the browser they drive and the /finetune form.

Imported as `tests.support` (the repository root is on the path for the tests, `scripts/` and `benchmarks/`).
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright's own browser download is not possible offline
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Every field of the Fine-tune form, as the /finetune and /estimate API take them: a tiny CPU run (one frozen
# ResNet-18, 8 shapes per class, 32 px, one epoch). Tests change what they exercise: {**TINY_FORM, "size": 48}.
TINY_FORM = dict(
    dataset="shapes",
    zip_file=None,
    models="resnet18@head",
    freeze="head",
    max_per_class=8,
    optimizer="adam",
    lr=1e-3,
    epochs=1,
    schedule="cosine",
    warmup_epochs=0.0,
    batch_size=16,
    size=32,
    augment=False,
    pretrained=False,
    init="default",
    head="linear",
    time_budget_s=0,
)


def playwright_or_skip():
    """Playwright's sync API, or skip the calling test module (no Chromium, or no Playwright) with the reason."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests skipped", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def raw_call(
    url: str,
    api_name: str,
    data: list,
    session_hash: str | None = "raw-test-session",
    timeout: float = 120,
    headers: dict | None = None,
):
    """Call an endpoint the way a script would, without gradio_client: join gradio's queue over HTTP with any
    JSON payload (what the page would never send), then read the answer from the event stream.

    Returns:
        (success, output data or error text).
    """
    import json
    import uuid

    import httpx

    session_hash = session_hash or uuid.uuid4().hex
    config = httpx.get(url + "config", timeout=30).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None, "trigger_id": None}
    joined = httpx.post(url + "gradio_api/queue/join", json=body, timeout=30, headers=headers)
    joined.raise_for_status()
    with httpx.stream(
        "GET", url + "gradio_api/queue/data", params={"session_hash": session_hash}, timeout=timeout
    ) as r:
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed":
                out = msg.get("output") or {}
                return bool(msg.get("success")), out.get("data") if msg.get("success") else out.get("error")
    return False, "the stream ended without an answer"


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last `reset_peak_rss` (Linux: VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    """Start counting the peak afresh (Linux: writing 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


# A resnet18 .pth of about 1 MB whose deflated members unpack to over 1 GB (issue 15's weights row), written by
# `python -c BIG_PTH PATH` in a subprocess: the test and benchmarks/load_class.py send the same file.
BIG_PTH = """
import sys, zipfile, torch, timm
sd = timm.create_model("resnet18").state_dict()
sd["aux1.big"] = torch.zeros(2**28)  # 1 GB of zeros, under a name a weights file may carry
torch.save(sd, sys.argv[1] + ".raw")
with zipfile.ZipFile(sys.argv[1] + ".raw") as src, zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        with src.open(info) as r, dst.open(info.filename, "w", force_zip64=True) as w:
            while chunk := r.read(2**24):
                w.write(chunk)
"""


# --------------------------------------------------------------------------- what a stranger uploads (issue 21)
# Made here, shared by tests/test_hostile.py and benchmarks/load_class.py --scenario hostile.


def weights_file(path: Path, seed: int) -> Path:
    """A resnet18 state dict of this seed as .safetensors (random weights, made here)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    sd = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    save_file(sd, str(path))
    return path


def many_tensors(path: Path, n: int) -> Path:
    """A .safetensors file of `n` one-value tensors (4 bytes each), written directly (header + data)."""
    import json

    header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(n)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4 * n))
    return path


def shapes_zip(path: Path, n: int = 6) -> Path:
    """A zip of two class folders of n small PNGs each."""
    import io
    import zipfile

    from PIL import Image

    with zipfile.ZipFile(path, "w") as zf:
        for cls, color in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(n):
                buf = io.BytesIO()
                Image.new("RGB", (24, 24), tuple(c + i for c in color)).save(buf, "PNG")
                zf.writestr(f"{cls}/{i}.png", buf.getvalue())
    return path


def cifar_archive(path: Path, batch_bytes: int = 0, members: int = 0, dtype=None, nan: bool = False) -> Path:
    """A file named like CIFAR-10's own archive: a batch of `batch_bytes` zeros (deflating to almost nothing), or
    `members` empty files, or batches of `dtype` (object, float with NaN) pickled like the real ones."""
    import io
    import pickle
    import tarfile

    import numpy as np

    folder = "cifar-10-batches-py"
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        if batch_bytes:
            info = tarfile.TarInfo(f"{folder}/data_batch_1")
            info.size = batch_bytes

            class Zeros(io.RawIOBase):
                left = batch_bytes

                def readable(self):
                    return True

                def readinto(self, b):
                    n = min(len(b), self.left)
                    b[:n] = bytes(n)
                    self.left -= n
                    return n

            tar.addfile(info, io.BufferedReader(Zeros()))
        for i in range(members):
            add(f"junk{i}", b"")
        if dtype is not None or nan:
            data = np.zeros((20, 3072), dtype=dtype or np.float32)
            if nan:
                data[0, 0] = np.nan
            batch = pickle.dumps({b"data": data, b"labels": [0] * 20})
            for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
                add(name, batch)
            add("batches.meta", pickle.dumps({b"label_names": [b"a", b"b"]}))
    return path


# --------------------------------------------------------------------------- jobs a test gives a worker (by name)


def hog(mb: int, seconds: float = 30.0) -> int:
    """A job that takes `mb` of memory and holds it (a job whose memory was counted wrong)."""
    import time

    block = bytearray(mb * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(seconds)
    return len(block)


def ticks(should_stop=None, most: int = 600):
    """A job that yields a tick every 0.1 s until it is stopped; returns how many it yielded."""
    import time

    n = 0
    while n < most and not (should_stop and should_stop()):
        n += 1
        yield n
        time.sleep(0.1)
    return n


def crash(code: int = 137) -> None:
    """A job whose process dies at once, the way a killed worker does."""
    import os

    os._exit(code)


def children(pid: int, comm_prefix: str = "cnnc-") -> dict[int, str]:
    """The descendants of `pid` named `comm_prefix...` (the workers: cnnc-spare, cnnc-train, ...; they are the
    children of the server's fork server, itself a child of the server)."""
    from cnncompare.executor.local import descendants

    out = {}
    for p in descendants(pid):
        try:
            comm = open(f"/proc/{p}/comm").read().strip()
        except OSError:
            continue
        if p != pid and comm.startswith(comm_prefix):
            out[p] = comm
    return out


def scene(kind: str, n: int = 20, w: int = 320, h: int = 240) -> list:
    """`n` RGB frames of one synthetic scene, moving a little frame to frame: "red" (a red square on dark grey) or
    "blue" (a blue disc on light grey)."""
    import numpy as np

    frames = []
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        if kind == "red":
            img[:] = (30, 30, 30)
            img[60:180, 100 + i : 220 + i] = (220, 30, 30)
        else:
            img[:] = (200, 200, 200)
            img[(yy - 120) ** 2 + (xx - 150 - i) ** 2 < 60**2] = (20, 40, 200)
        frames.append(img)
    return frames


def write_y4m(path: Path, frames: list, fps: int = 10) -> Path:
    """A Y4M video (YUV 4:2:0) of RGB frames: what Chromium's fake camera plays
    (--use-file-for-fake-video-capture), looping."""
    import numpy as np

    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
            planes = (
                0.299 * r + 0.587 * g + 0.114 * b,
                -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                0.5 * r - 0.418688 * g - 0.081312 * b + 128,
            )
            f.write(b"FRAME\n")
            for k, p in enumerate(planes):
                if k:  # chroma at half resolution
                    p = p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
                f.write(np.clip(p, 0, 255).astype(np.uint8).tobytes())
    return path
