"""What a worker runs: the engine's long or memory-hungry work, as functions of picklable arguments.

Each is named in a `Job` by "cnncompare.executor.work:<name>"; none reads the server's state, so the same
call gives the same answer inline, in a local worker and on a Ray node. The dataset is decoded here, in the
worker (`DataSpec.open`), never in the web server: the server keeps only its small `DataInfo`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import compare, data, estimate, export, training
from .. import gallery as gallery_engine
from ..data import placement
from ..env import Env
from ..settings import DataSettings

__all__ = ["DataSpec", "DataInfo", "fine_tune", "decode", "gallery", "export_run", "estimate_text", "FN"]

FN = "cnncompare.executor.work:"  # a Job's `fn` prefix


@dataclass(frozen=True)
class DataSpec:
    """A dataset as a worker opens it (`data.open_source`, with the server's limits when `server`)."""

    data: DataSettings  # its source: a dataset's name, or the path of an upload (a zip, a CIFAR archive)
    env: Env
    seed: int = 0
    size: int | None = None  # the pixel check's input size (None: none)
    work_dir: str | None = None  # where an upload is unpacked (the visitor's own folder)
    server: bool = True

    @property
    def source(self) -> str:
        return self.data.source

    def open(self) -> data.LoadedData:
        return data.open_source(
            self.data,
            self.env,
            seed=self.seed,
            size=self.size,
            server=self.server,
            work_dir=self.work_dir,
        )


@dataclass(frozen=True)
class DataInfo:
    """What the page says of a decoded dataset."""

    name: str
    classes: tuple[str, ...]
    n_train: int
    n_val: int
    skipped: int
    report_md: str

    @classmethod
    def of(cls, ds: data.LoadedData) -> DataInfo:
        return cls(
            ds.name,
            tuple(ds.classes),
            len(ds.train),
            len(ds.val),
            len(ds.report.skipped),
            ds.report.summary(max_paths=8, markdown=True),
        )


def fine_tune(
    plan: compare.Plan,
    data_spec: DataSpec,
    labels: list[str],
    out_dir: str | None,
    owner: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator:
    """The dataset's `DataInfo`, then the events of the plan's runs named in `labels`, in the plan's order."""
    should_stop = should_stop or (lambda: False)
    ds = data_spec.open()
    yield DataInfo.of(ds)
    try:
        wanted = set(labels)
        for run in plan.runs():
            if run.label in wanted:
                yield from compare.one_run(run, plan, ds, out_dir, should_stop, owner)
    finally:
        placement.release_data()


def decode(data_spec: DataSpec) -> DataInfo:
    """The dataset decoded and checked as a run would load it (its report, before a plan is started)."""
    return DataInfo.of(data_spec.open())


def gallery(results: list[training.RunResult], data_spec: DataSpec, path: str) -> str:
    """The confusion gallery of a finished comparison, saved to `path`; its notes ("" when none)."""
    prepared = gallery_engine.prepare(results, data_spec.open())
    gallery_engine.save(prepared, Path(path))
    return "; ".join(prepared.notes)


def export_run(run_dir: str, out_dir: str, formats: tuple[str, ...]) -> export.ExportResult:
    return export.export_run(run_dir, out_dir, formats)


def estimate_text(plan: compare.Plan, data_spec: DataSpec) -> str:
    """The engine's estimate of every planned run (the CLI prints the same text)."""
    return estimate.estimate_plan(plan, data_spec.open()).text()
