"""Take a run home from the page: one of the visitor's fine-tuned runs exported as standalone weights (safetensors
in the backend's own names), config.json, README.md and ONNX (`cnncompare.export`, as `cnncompare export` does),
zipped into the visitor's own download folder. The same panel sits under the Fine-tune results and on Predict.

API: `/export_run(run, formats[, visitor])` -> (the zip, a sentence).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import zipfile
from types import SimpleNamespace

import gradio as gr

from .. import export, runs
from ..errors import CNNCompareError
from ..executor import Job, work
from ..fileio import atomic_path
from ..server import boundary, ledger, visitors
from . import lenient
from .common import Context, in_line, message, warn_md

__all__ = ["build", "export_zip"]

FORMAT_CHOICES = [("standalone weights (.safetensors)", "safetensors"), ("ONNX (model.onnx)", "onnx")]


def export_zip(ctx: Context, visitor: visitors.Visitor, run_name: str, formats) -> tuple[str, str]:
    """(the zip of one exported run, the sentence for the page). The same run in the same formats is exported once
    (kept in the visitor's download folder for an hour); a new export is counted against the visitor's quota and
    the server's cap for downloads before anything is written.

    Raises:
        CNNCompareError: a run that is not the visitor's (the same sentence as one that does not exist), one that
        cannot be exported (no finished epoch), or an export over the visitor's quota or the server's cap.
    """
    saved = visitors.find_run(ctx, visitor, run_name)
    fmts = export.parse_formats(boundary.choices(formats, "Formats") or ["safetensors"])
    weights = saved.path / "weights.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    key = hashlib.sha256(f"{saved.path.name}|{stamp}|{','.join(fmts)}".encode()).hexdigest()[:16]
    folder = ledger.visitor_downloads(visitor) / f"export-{key}"
    zip_path = folder / f"{saved.path.name}-export.zip"
    text_path = folder / "sentence.txt"
    if zip_path.is_file() and text_path.is_file():  # made already: the same file again, kept another hour
        os.utime(folder)
        return str(zip_path), text_path.read_text()
    full = runs.saved_bytes(
        dataclasses.replace(saved.entry, weights_file="given"), len(saved.classes), saved.settings.size
    )
    need = 2 * full * len(fmts) + 2**20  # the files, then their zip (the files go once it is written)
    # memory, like a run's admission: the model, its state dict and (for ONNX) the exported program hold the weights
    # about four times over; an export over what one run may use is refused before anything is built
    if ctx.env.max_run_mb and 4 * full > ctx.env.max_run_mb * 2**20:
        raise CNNCompareError(
            f"Exporting {saved.run_label} needs about {4 * full / 2**30:.1f} GB of memory, more than one job may use "
            f"on this server ({ctx.env.max_run_mb / 1024:.1f} GB): export it with the command line "
            "(cnncompare export) on a larger machine."
        )
    with ledger.reserve(ctx, visitor, need, f"Exporting {saved.run_label}", "downloads"):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        out = folder / f"{saved.path.name}-export"
        job = Job(
            work.FN + "export_run",
            {"run_dir": str(saved.path), "out_dir": str(out), "formats": fmts},
            kind="export",
            memory_mb=4 * full / 2**20,
            label=f"the export of {saved.run_label}",
        )
        result = ctx.workers.call(job)  # in a worker: the model, its state dict and the ONNX program leave with it
        with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    method = (
                        zipfile.ZIP_STORED if f.suffix in (".safetensors", ".onnx", ".data") else zipfile.ZIP_DEFLATED
                    )
                    zf.write(f, f"{out.name}/{f.relative_to(out).as_posix()}", compress_type=method)
        shutil.rmtree(out, ignore_errors=True)
    text = (
        f"**{saved.run_label}** exported: {', '.join(f.name for f in result.files)}. The README.md inside has the "
        f"lines that load it without cnncompare. ONNX: {result.onnx}"
    )
    text_path.write_text(text)
    return str(zip_path), text


def build(ctx: Context, elem_prefix: str) -> SimpleNamespace:
    """The export panel (call inside a Blocks): the visitor's runs, formats, Export, the zip. `refresh` (fn,
    inputs, outputs) fills the runs after a comparison or when the tab opens."""
    with gr.Row(equal_height=True):
        run_dd = lenient.Dropdown(
            [], label="Run to export", scale=3, allow_custom_value=True, elem_id=f"{elem_prefix}-export-run"
        )
        formats = lenient.CheckboxGroup(
            FORMAT_CHOICES, value=["safetensors", "onnx"], label="Formats", scale=3, elem_id=f"{elem_prefix}-formats"
        )
        go = gr.Button("Export", scale=1, elem_id=f"{elem_prefix}-export")
    note = gr.Markdown(
        "A fine-tuned run as files that load without cnncompare: its whole model in timm's or torchvision's own "
        "format, the classes in order, the input size and normalisation, and an ONNX file for deployment.",
        elem_classes=["cc-note"],
        elem_id=f"{elem_prefix}-export-note",
    )
    file = gr.File(label="Export", interactive=False, elem_id=f"{elem_prefix}-export-file")
    state = ctx.visitor_state
    extra = [state] if state is not None else []

    def exported(who, run, fmts):
        try:
            path, text = export_zip(ctx, who, run, fmts)
        except Exception as err:
            return None, warn_md(message(err))
        return path, text

    def export_run(run, fmts, visitor=None, request: gr.Request = None):
        """One of the caller's runs as standalone weights, config, README and ONNX, zipped."""
        yield from in_line(
            ctx,
            "files",
            visitor,
            request,
            lambda who: exported(who, run, fmts),
            refused=lambda text: (None, warn_md(text)),
            waiting=lambda text: (gr.skip(), text),
        )

    def runs_of(visitor=None, request: gr.Request = None):
        try:
            choices, _ = visitors.visible_runs(ctx, ctx.visitor(visitor, request))
        except Exception:
            return gr.Dropdown(choices=[])
        own = [(c.label, c.value) for c in choices if not c.shared]
        return gr.Dropdown(choices=own, value=own[0][1] if own else None)

    api = "export_run" if elem_prefix == "ft" else f"export_run_{elem_prefix}"  # one public name: /export_run
    go.click(
        export_run,
        [run_dd, formats, *extra],
        [file, note],
        api_name=api,
        api_visibility="public" if elem_prefix == "ft" else "private",
        concurrency_limit=None,
    )
    return SimpleNamespace(
        run=run_dd, file=file, note=note, refresh=dict(fn=runs_of, inputs=extra or None, outputs=[run_dd])
    )
