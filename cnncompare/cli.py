"""`cnncompare ...` (or `python -m cnncompare ...`): the command-line face of the engine.

Every subcommand prints a readable table, or exactly one JSON document with --json.
Errors print one line on stderr and exit non-zero (2 for bad input, 1 for anything
unexpected); set CNNCOMPARE_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .clicmds import cmd_export, cmd_features, counting_lesson
from .clitext import _dump, fmt_count, fmt_num, table
from .env import Env
from .errors import CNNCompareError, first_line
from .settings import DataSettings, FreezePolicy, ModelEntry, TrainSettings, add_arguments, from_args

# --------------------------------------------------------------------------- commands


def cmd_models(args) -> None:
    from .models import catalog

    entries = [catalog.CATALOG[n] for n in catalog.names()]
    if args.json:
        _dump([e.to_dict() for e in entries])
        return
    rows = []
    for e in entries:
        ref = e.reference
        rows.append(
            [
                e.name,
                e.family,
                str(e.year or "-"),
                e.backend,
                f"{e.default_size}",
                f"{e.min_size}",
                fmt_num(ref.top1 if ref else None, 2),
                e.depth_note,
            ]
        )
    print(table(rows, ["name", "family", "year", "backend", "size", "min", "ref top-1", "note"]))
    print(
        "\nAny other timm model works by its timm name (e.g. regnety_016). Reference top-1: torchvision's "
        "published ImageNet accuracy for the same weights; '-' where the backend publishes none."
    )


def cmd_profile(args) -> None:
    from . import profiling

    if args.batch is not None and args.batch < 1:
        raise CNNCompareError(f"--batch must be at least 1, got {args.batch}.")
    results = [
        profiling.profile(n, args.size, batch=args.batch, device=args.device, latency=not args.no_latency)
        for n in args.names
    ]
    if args.json:
        _dump([r.to_dict() for r in results])
        return
    rows = []
    for r in results:
        lat = r.latency_ms
        rows.append(
            [
                r.name,
                r.family,
                str(r.input_size),
                fmt_count(r.params),
                fmt_count(r.macs),
                fmt_count(r.flops),
                fmt_num(r.size_mb),
                fmt_num(r.activation_mb),
                fmt_num(lat.p50 if lat else None),
                fmt_num(lat.p90 if lat else None),
                fmt_num(r.throughput_ips),
                fmt_num(r.ref_top1, 2),
            ]
        )
    print(
        table(
            rows,
            [
                "model",
                "family",
                "px",
                "params",
                "MACs",
                "FLOPs",
                "MiB",
                "act MiB",
                "p50 ms",
                "p90 ms",
                f"img/s@{results[0].batch}",
                "ref top-1",
            ],
        )
    )
    r = results[0]
    print(
        f"\ndevice: {r.device}, {r.dtype}; torch {r.env['torch']}, timm {r.env['timm']}. "
        f"MACs count {profiling.COUNTED_OPS}; FLOPs = 2 x MACs."
    )


def cmd_blocks(args) -> None:
    from . import models

    report = models.freeze_report(args.name, args.freeze, args.size)
    if args.json:
        _dump(report.to_dict())
    else:
        _print_blocks(report)
    if report.problem:  # the same sentence as the Architectures tab; a script sees the status
        raise CNNCompareError(report.summary())


def _print_blocks(report) -> None:
    rows = [
        [
            g.name,
            str(len(g.modules)),
            fmt_count(g.params),
            fmt_count(g.trainable),
            "x".join(map(str, g.out_shape)) if g.out_shape else "-",
            "frozen" if g.frozen else "",
        ]
        for g in report.blocks
    ]
    print(table(rows, ["block", "layers", "params", "trainable", "output", ""]))
    print(f"\n{report.name} at {report.size} px, freeze={report.policy}: {report.summary()}")


def cmd_diagram(args) -> None:
    from . import diagram, models, profiling

    size = profiling.input_size(args.size)
    policy = args.freeze or "none"
    # a policy that does not fit a model: drawn unfrozen, and said as the Architectures tab says it
    problems = [r.summary() for r in (models.freeze_report(n, policy, size) for n in args.names) if r.problem]
    if problems:
        policy = "none"
    tables = {name: diagram.table(name, size, policy) for name in args.names}
    if args.html:
        path = Path(args.html)
        if path.parent and not path.parent.is_dir():
            raise CNNCompareError(f"--html: the folder {path.parent} does not exist; create it or choose another path.")
        diagram.figure(args.names, size, policy).write_html(str(path), include_plotlyjs=True)
    if args.json:
        _dump({name: rows for name, rows in tables.items()})
    else:
        for name, rows in tables.items():
            px = size or models.catalog.get(name).default_size
            print(f"{name} at {px} px, freeze={policy}: {len(rows)} units")
            body = [
                [str(r["#"]), r["unit"], r["group"], r["output"], fmt_count(r["params"]), r["state"], r["layer"]]
                for r in rows
            ]
            print(table(body, ["#", "unit", "group", "output", "params", "state", "layer"]))
            print()
    if args.html:
        print(f"diagram written to {args.html}", file=sys.stderr)
    if problems:
        raise CNNCompareError("Not frozen as asked: " + "; ".join(problems))


def cmd_finetune(args) -> None:
    from . import compare, data, estimate, hubio, runtime

    env = Env.read()
    main_process = runtime.is_main_process()  # under torchrun, rank 0 reports and writes
    settings = from_args(TrainSettings, args)
    defaults = from_args(ModelEntry, args)
    items = [hubio.as_weights_run(item) for item in compare.Plan.items(args.models)]  # an export: from its weights
    plan = compare.Plan.parse(
        items,
        model_defaults=defaults,
        settings=settings,
        missing_weights=args.missing_weights,
        limits=compare.Limits.local(env),
    )
    out = Path(args.out) if args.out else env.runs_dir
    try:
        # downloads and unpacked zips go to the persistent data folder: CIFAR is downloaded once
        ds = data.open_source(from_args(DataSettings, args), env, seed=settings.seed)
        if main_process:
            print(ds.report.summary(), file=sys.stderr)
        if main_process and "WORLD_SIZE" not in os.environ:
            print(estimate.estimate_plan(plan, ds).text(), file=sys.stderr)
        results = compare.run_comparison(plan, ds, out_dir=out, on_event=_progress if main_process else None)
    finally:
        _leave_process_group()
    if main_process:
        _report(results, args, out)


def _report(results, args, out: Path, extra: dict | None = None) -> None:
    """The results table (or --json), the export, and an error when every run failed."""
    from . import compare

    rows = compare.table_rows(results)
    for row, r in zip(rows, results):  # paths that work from the caller's folder (`predict --run` takes them)
        row["run_dir"] = str(Path(r.run_dir).resolve()) if r.run_dir else None
    if args.export:
        paths = compare.export(results, args.export)
        print(f"exported: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if args.json:
        runs = [dict(name=r["model"], **r) for r in rows]
        _dump({**extra, "runs": runs} if extra else runs)
        if all(r["error"] for r in rows):
            raise CNNCompareError("every model failed; see the 'error' fields.")
        return
    table_rows = [
        [
            r["run"],
            fmt_num(r["val_top1"]),
            fmt_num(r["val_top5"]),
            fmt_num(r["train_time_s"]),
            fmt_num(r["images_per_s"]),
            fmt_count(r["trainable_params"]),
            fmt_count(r["macs"]),
            fmt_num(r["latency_ms"]),
            "yes" if r["feature_cache"] else "",
            r["error"] or r["stopped"] or r["warnings"] or "",
        ]
        for r in rows
    ]
    print(
        table(
            table_rows,
            ["run", "top-1 %", "top-5 %", "train s", "img/s", "trainable", "MACs", "lat ms", "cache", "note"],
        )
    )
    print(f"\nruns saved under {out}/")
    if all(r["error"] for r in rows):
        raise CNNCompareError("every model failed; see the table above.")


def cmd_lesson(args) -> None:
    from . import compare, counting, data, estimate, lessons

    if not args.key:
        every = [*lessons.LESSONS, *counting.COUNTING]
        print(table([[k.key, k.title] for k in every], ["lesson", "what it shows"]))
        return
    key = args.key.strip().lower()
    if key in counting.BY_KEY:
        return counting_lesson(counting.BY_KEY[key], args)
    lesson = lessons.BY_KEY.get(key)
    if lesson is None:
        keys = ", ".join([*lessons.BY_KEY, *counting.BY_KEY])
        raise CNNCompareError(f"Unknown lesson '{args.key[:40]}': choose one of {keys}.")
    if args.plot:
        raise CNNCompareError(f"--plot draws the counting lessons ({', '.join(counting.BY_KEY)}), not '{key}'.")
    env = Env.read()
    cap = from_args(DataSettings, args).max_per_class or lesson.max_per_class
    scaled = (
        f" (scaled down: {cap} images per class instead of {lesson.max_per_class})"
        if cap != lesson.max_per_class
        else ""
    )
    print(f"{lesson.title}{scaled}\nWhat you should see: {lesson.expect}\n", file=sys.stderr)
    plan = lesson.plan(compare.Limits.local(env))
    out = Path(args.out) if args.out else env.runs_dir
    ds = data.open_source(DataSettings("shapes", cap), env, seed=plan.settings.seed)  # the app's data, exactly
    print(ds.report.summary(), file=sys.stderr)
    print(estimate.estimate_plan(plan, ds).text(), file=sys.stderr)
    results = compare.run_comparison(plan, ds, out_dir=out, on_event=_progress)
    reading = lesson.read(results)
    extra = dict(lesson=lesson.key, expect=lesson.expect, showed=reading.showed, reading=reading.sentence)
    _report(results, args, out, extra)
    if not args.json:
        print(f"\nWhat the runs showed{scaled}: {reading.sentence}")


def cmd_app(args) -> None:
    """The web app: this process becomes `python -m cnncompare.ui` with the same options (the command line face
    never imports the web face; the app's own process starts it, as `python app.py` does)."""
    argv = [sys.executable, "-m", "cnncompare.ui"]
    for flag, value in (("--host", args.host), ("--port", args.port), ("--runs", args.runs)):
        if value:
            argv += [flag, str(value)]
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])  # a clone that is not installed: the child finds it too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    sys.stdout.flush()
    if os.name == "posix":
        os.execve(sys.executable, argv, env)
    sys.exit(subprocess.call(argv, env=env))


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_predict(args) -> None:
    from . import inference, runs, runtime

    device = runtime.resolve_device("auto")
    built = []
    for name in args.models or []:
        loaded = inference.imagenet_model(name, args.pretrained, args.weights, device=device)
        if loaded.note and args.pretrained:
            print(f"note: {name}: {loaded.note}", file=sys.stderr)
        built.append((loaded.model, None))
    for run_dir in args.run or []:
        saved = runs.load_run(run_dir)
        built.append((saved.load_model(device), saved))
    if not built:
        raise CNNCompareError("Give at least one model (--models NAME ...) or a fine-tuned run (--run DIR).")
    image = inference.load_image(args.image)
    preds = []
    for model, saved in built:
        size = args.size or (saved.settings.size if saved else model.cnncompare.info.default_size)
        preds.append(
            inference.predict(
                model, image, size=size, classes=saved.classes if saved else None, top_k=args.top, cam=False
            )
        )
    if args.json:
        _dump([p.to_dict() for p in preds])
        return
    for p in preds:
        print(f"{p.model} ({p.time_ms:.1f} ms){': ' + p.note if p.note else ''}")
        for label, prob in p.top:
            print(f"  {prob * 100:6.2f}%  {label}")


def _progress(ev) -> None:
    if ev.kind == "step":
        eta = f", ~{ev.eta_s:.0f} s left" if ev.eta_s is not None else ""
        bar = "#" * int(20 * ev.progress)
        print(
            f"\r{ev.label or ev.model:>16s} [{bar:<20s}] epoch {ev.epoch}/{ev.epochs} step {ev.step}/{ev.steps} "
            f"loss {ev.loss:.3f}{eta}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )
    elif ev.kind == "epoch":
        ips = f", {ev.images_per_s:.0f} img/s" if ev.images_per_s else ""
        if ev.warmup_s and ev.epoch == 1:
            ips += f" (after {ev.warmup_s:.1f} s of warm-up)"
        print(
            f"\r{ev.label or ev.model:>16s} epoch {ev.epoch}/{ev.epochs}: train loss {ev.loss:.3f}, "
            f"val top-1 {ev.val_top1:.1f}%{ips}{' ' * 20}",
            file=sys.stderr,
        )
    elif ev.message:
        print(ev.message, file=sys.stderr)


# --------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other error, instead of usage + error
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="cnncompare", description="Compare classic CNN image classifiers side by side.")
    p.add_argument("--version", action="version", version=f"cnncompare {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    a = sub.add_parser("app", help="start the web app (as python app.py does)")
    add_app_arguments(a)
    a.set_defaults(func=cmd_app)

    m = sub.add_parser("models", help="list the catalog")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    pr = sub.add_parser("profile", help="params, MACs/FLOPs, size, memory, latency")
    pr.add_argument("names", nargs="+", metavar="NAME")
    pr.add_argument("--size", type=int, help="input size in pixels (default: each model's own)")
    pr.add_argument("--batch", type=int, help="batch for throughput (default 8 on CPU, 64 on CUDA)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda")
    pr.add_argument("--no-latency", action="store_true", help="count only; skip timing")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_profile)

    b = sub.add_parser("blocks", help="layer groups of a model and what a freeze policy freezes")
    b.add_argument("name")
    b.add_argument("--size", type=int)
    b.add_argument("--freeze", help=FreezePolicy.help())
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_blocks)
    _add_model_commands(sub)
    _add_training_commands(sub)
    return p


def _add_model_commands(sub) -> None:
    """diagram, predict and export."""
    from .settings import INPUT_SIZE

    size_help = f"{INPUT_SIZE.help} ({INPUT_SIZE.low:g} to {INPUT_SIZE.high:g}, or {INPUT_SIZE.none_text})"
    d = sub.add_parser("diagram", help="every unit of each model in order (conv, pool, fc, Inception, residual)")
    d.add_argument("names", nargs="+", metavar="NAME")
    d.add_argument("--size", default=INPUT_SIZE.none_text, help=size_help)
    d.add_argument("--freeze", help=FreezePolicy.help("which units the policy freezes"))
    d.add_argument("--html", metavar="FILE", help="also write the side-by-side diagram as a standalone HTML page")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_diagram)

    pd = sub.add_parser("predict", help="top-k classes of one image for several models or fine-tuned runs")
    pd.add_argument("image")
    pd.add_argument("--models", nargs="*", metavar="NAME")
    pd.add_argument("--run", nargs="*", metavar="DIR", help="fine-tuned run directories (from finetune --out)")
    pd.add_argument("--pretrained", action="store_true", help="ImageNet weights (falls back to random offline)")
    pd.add_argument("--weights", metavar="FILE", help="with --pretrained: a local ImageNet weights file for the model")
    pd.add_argument("--size", type=int)
    pd.add_argument("--top", type=_positive_int, default=5, help="how many classes to show (default 5)")
    pd.add_argument("--json", action="store_true")
    pd.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export", help="a fine-tuned run as standalone weights (safetensors), config.json, README.md and ONNX"
    )
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (finetune --out, or the app's zip download)")
    ex.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created)")
    ex.add_argument("--format", default="safetensors,onnx", help="safetensors, onnx or both (default both)")
    fe = sub.add_parser("features", help="each model's stage outputs (feature maps) for one image, as PNG grids")
    fe.add_argument("image")
    fe.add_argument("--models", nargs="+", required=True, metavar="NAME")
    fe.add_argument("--size", type=int, default=224, help="input size in pixels (default 224)")
    fe.add_argument("--top", type=_positive_int, default=6, help="channels shown per stage (default 6)")
    fe.add_argument("--out", required=True, metavar="DIR", help="the folder for the PNG files (created)")
    fe.add_argument("--json", action="store_true")
    fe.set_defaults(func=cmd_features)

    ex.add_argument(
        "--push-to-hub",
        metavar="OWNER/NAME",
        help="also upload the export to this Hugging Face model repository (your token: huggingface-cli login)",
    )
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_export)


def _add_training_commands(sub) -> None:
    """finetune and lesson: their options derived from the settings schema."""
    f = sub.add_parser("finetune", help="fine-tune several models on one dataset and compare them")
    f.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="NAME[@POLICY]",
        help="models, each optionally with its own freeze policy: resnet18@stages:2; quote one to give "
        "it its own settings too: 'resnet18@none optimizer=sgd lr=0.05' (any setting below); an export "
        "starts from its weights: local-dir:PATH@head or hf-hub:OWNER/NAME@head",
    )
    add_arguments(f, DataSettings)
    add_arguments(f, ModelEntry, skip=("model",))
    add_arguments(f, TrainSettings)
    f.add_argument(
        "--missing-weights",
        default="random",
        choices=["random", "fail"],
        help="when ImageNet weights cannot be had: start from random weights (said in the results) "
        "or fail that run (default random)",
    )
    f.add_argument("--out", help="directory for run folders (default $CNNCOMPARE_RUNS or ./runs)")
    f.add_argument("--export", metavar="DIR", help="also write results.csv, results.json and a zip of the runs here")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_finetune)

    le = sub.add_parser("lesson", help="run one of the Learn tab's lessons and read what it showed (no KEY: list them)")
    le.add_argument(
        "key",
        nargs="?",
        metavar="KEY",
        help="features, keras, batchnorm, init, optimizers, sweep, reductions or stacked",
    )
    add_arguments(le, DataSettings, skip=("source", "val_fraction"))  # fewer images per class: quicker
    le.add_argument("--out", help="directory for run folders (default $CNNCOMPARE_RUNS or ./runs)")
    le.add_argument("--export", metavar="DIR", help="also write results.csv, results.json and a zip of the runs here")
    le.add_argument("--plot", metavar="FILE.html", help="reductions, stacked: also draw the designs to this page")
    le.add_argument("--json", action="store_true")
    le.set_defaults(func=cmd_lesson)


def add_app_arguments(parser) -> None:
    """The web app's options (`cnncompare app` and `python app.py` share them)."""
    parser.add_argument("--host", help="address to listen on (default GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--runs", help="where runs are saved (default CNNCOMPARE_RUNS or ./runs)")


def main_entry() -> None:
    """The `cnncompare` command (installed by `pip install .`)."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        return 0
    except CNNCompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line, never a traceback (unless debugging)
        if Env.read().debug:
            raise
        print(
            f"error: unexpected {type(err).__name__}: {first_line(err)} (set CNNCOMPARE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1
