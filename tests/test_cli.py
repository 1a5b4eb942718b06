"""The command line as a user runs it (`cnncompare.cli.main`, in process): where its data lives, what it says."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from cnncompare.cli import main


def _fake_cifar10(folder: Path) -> None:
    """A tiny CIFAR-10 folder in the published format: 5 training batches and a test batch of 2 images a class."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = np.repeat(np.arange(10), 2)
        pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": pixels, b"labels": labels.tolist()}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))


TINY_ARGS = ["--models", "resnet18@head", "--epochs", "1", "--size", "32", "--batch", "16", "--json"]


def test_cifar_comes_from_the_persistent_data_folder_on_every_run(tmp_path, monkeypatch, capsys):
    """Twice `finetune --dataset cifar10`, offline: both runs read the one folder under the runs folder's _data
    (downloaded there once when online), not a scratch folder deleted after each command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    _fake_cifar10(tmp_path / "runs" / "_data" / "cifar" / "cifar-10-batches-py")
    for _ in range(2):
        assert main(["finetune", "--dataset", "cifar10", *TINY_ARGS, "--out", str(tmp_path / "out")]) == 0
        out = capsys.readouterr()
        [row] = json.loads(out.out)
        assert row["error"] is None and row["epochs"] == 1
        assert "Source: cifar10" in out.err and "official CIFAR-10 split" in out.err
    assert (tmp_path / "runs" / "_data" / "cifar" / "cifar-10-batches-py" / "data_batch_1").is_file()


def test_cifar_offline_with_nothing_on_disk_names_a_folder_that_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    assert main(["finetune", "--dataset", "cifar10", *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    folder = (tmp_path / "runs" / "_data" / "cifar").resolve()
    assert f"was not found in '{folder}'" in err and "cifar-10-batches-py" in err and "Traceback" not in err
    assert folder.is_dir()  # the folder the message names is there to put the files in


def test_a_zip_is_unpacked_once_into_the_data_folder(tmp_path, monkeypatch, capsys):
    import zipfile
    from io import BytesIO

    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNCOMPARE_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "mine.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for i in range(6):
                buf = BytesIO()
                Image.new("RGB", (40, 40), tuple(min(255, v + 7 * i) for v in colour)).save(buf, "PNG")
                zf.writestr(f"{c}/{i}.png", buf.getvalue())
    for _ in range(2):
        assert main(["finetune", "--dataset", str(path), *TINY_ARGS, "--out", str(tmp_path / "out")]) == 0
        capsys.readouterr()
    assert len(list((tmp_path / "runs" / "_data" / "uploads").iterdir())) == 1


def test_cnncompare_app_starts_the_web_app_in_its_own_process(tmp_path):
    """`cnncompare app` hands its process to `python -m cnncompare.ui` (the CLI never imports the web face): the
    same process id then serves the page."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import free_port

    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "CNNCOMPARE_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnncompare",
            "app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--runs",
            str(tmp_path),
        ],
        env=env,
        cwd=str(Path(__file__).resolve().parents[1]),  # a clone, not installed
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, page = time.monotonic() + 240, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert "cnncompare" in page
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"cnncompare.ui" in f.read()  # the CLI's own process became the app's
    finally:
        proc.terminate()
        proc.wait(30)


def test_every_help_and_the_version_print_at_once_without_torch():
    """`--version` and every command's `--help` build the parser only (no torch: under a second), and every help
    text prints (argparse formats help with %, which a setting's help may contain)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, sys\n"
        "from cnncompare.cli import build_parser, main\n"
        "sub = next(a for a in build_parser()._actions if hasattr(a, 'choices') and isinstance(a.choices, dict))\n"
        "for name, parser in sub.choices.items():\n"
        "    assert parser.format_help(), name\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['--version'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(out.getvalue().strip(), sorted(sub.choices), 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cnncompare ") and "'finetune'" in r.stdout and "'lesson'" in r.stdout
    assert r.stdout.strip().endswith("False"), r.stdout  # torch not imported
