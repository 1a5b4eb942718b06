"""The commands that write what a person takes away (`export`, `features`) and the lessons that count instead of
train; the rest of the command line is `cli`, which parses for all of them."""

from __future__ import annotations

from pathlib import Path

from .clitext import _dump, table
from .errors import CNNCompareError

__all__ = ["cmd_export", "cmd_features", "counting_lesson"]


def counting_lesson(lesson, args) -> None:
    """A lesson that counts instead of trains: its table and reading, at once, and with --plot its designs drawn
    (the Learn tab shows the same)."""
    designs, reading = lesson.read()
    rows = [d.row() for d in designs]
    plot = getattr(args, "plot", None)
    if plot:  # the Learn tab's drawing, self-contained: the page works offline too
        from . import plots

        plot = Path(plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        plots.counting_figure(lesson.key, [d.to_dict() for d in designs]).write_html(plot, include_plotlyjs=True)
    if args.json:
        done = dict(lesson=lesson.key, expect=lesson.expect, designs=rows, showed=reading.showed)
        _dump(done | dict(reading=reading.sentence) | (dict(plot=str(plot.resolve())) if plot else {}))
        return
    print(f"{lesson.title}\nWhat you should see: {lesson.expect}\n")
    print(table([[f"{v:,}" if isinstance(v, int) else v for v in r.values()] for r in rows], list(rows[0])))
    print(f"\nWhat it shows: {reading.sentence}")
    if plot:
        print(f"wrote {plot}")


def cmd_features(args) -> None:
    """Each model's stage outputs for one image, as PNG grids (`cnncompare.featuremaps`)."""
    from . import featuremaps, inference

    image = inference.load_image(args.image)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name in args.models:
        loaded = inference.imagenet_model(name, device="cpu")  # ImageNet weights, else random (said in the note)
        fm = featuremaps.feature_maps(image, loaded, args.size, args.top)
        files = [out / f"{name}-stages.png"]
        featuremaps.grid_image(fm).save(files[0])
        kernels = featuremaps.kernels_image(fm)
        if kernels is not None:
            files.append(out / f"{name}-kernels.png")
            kernels.save(files[-1])
        done.append((fm, files))
    if args.json:
        _dump(
            [
                dict(
                    model=fm.model,
                    size=fm.size,
                    weights=fm.weights,
                    note=fm.note,
                    stages=[dict(name=s.name, shape=list(s.shape), channels=s.channels) for s in fm.stages],
                    files=[str(f.resolve()) for f in files],
                )
                for fm, files in done
            ]
        )
        return
    for fm, files in done:
        print(fm.summary() + (f"\n  {fm.note}" if fm.note else ""))
        print("".join(f"\n  wrote {f}" for f in files).lstrip("\n"))


def cmd_export(args) -> None:
    from . import export, hubio

    formats = export.parse_formats(args.format)
    result = export.export_run(args.run_dir, args.out, formats)
    if args.push_to_hub:
        result.notes.append(f"Pushed to {hubio.push_folder(result.out_dir, args.push_to_hub)}")
    if args.json:
        _dump(result.to_dict())
    else:
        print(result.summary())
    if "onnx" in formats and not result.onnx_written:  # asked for and not written: what was written is kept
        raise CNNCompareError(result.onnx)
