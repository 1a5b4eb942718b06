"""`python -m cnncompare ...`: the command-line face of the engine.

Every subcommand prints a readable table, or exactly one JSON document with --json.
Errors print one line on stderr and exit non-zero (2 for bad input, 1 for anything
unexpected); set CNNCOMPARE_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Callable

from .errors import CNNCompareError


# --------------------------------------------------------------------------- formatting

def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _dump(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --------------------------------------------------------------------------- commands

def cmd_models(args) -> None:
    from . import catalog

    entries = [catalog.CATALOG[n] for n in catalog.names()]
    if args.json:
        _dump([e.to_dict() for e in entries])
        return
    rows = []
    for e in entries:
        ref = e.reference
        rows.append([e.name, e.family, str(e.year or "-"), e.backend, f"{e.default_size}", f"{e.min_size}",
                     fmt_num(ref.top1 if ref else None, 2), e.depth_note])
    print(table(rows, ["name", "family", "year", "backend", "size", "min", "ref top-1", "note"]))
    print("\nAny other timm model works by its timm name (e.g. regnety_016). Reference top-1: torchvision's "
          "published ImageNet accuracy for the same weights; '-' where the backend publishes none.")


def cmd_profile(args) -> None:
    from . import profiling

    if args.batch is not None and args.batch < 1:
        raise CNNCompareError(f"--batch must be at least 1, got {args.batch}.")
    results = [profiling.profile(n, args.size, batch=args.batch, device=args.device, latency=not args.no_latency)
               for n in args.names]
    if args.json:
        _dump([r.to_dict() for r in results])
        return
    rows = []
    for r in results:
        lat = r.latency_ms
        rows.append([r.name, r.family, str(r.input_size), fmt_count(r.params), fmt_count(r.macs), fmt_count(r.flops),
                     fmt_num(r.size_mb), fmt_num(r.activation_mb), fmt_num(lat.p50 if lat else None),
                     fmt_num(lat.p90 if lat else None), fmt_num(r.throughput_ips), fmt_num(r.ref_top1, 2)])
    print(table(rows, ["model", "family", "px", "params", "MACs", "FLOPs", "MiB", "act MiB", "p50 ms", "p90 ms",
                       f"img/s@{results[0].batch}", "ref top-1"]))
    r = results[0]
    print(f"\ndevice: {r.device}, {r.dtype}; torch {r.env['torch']}, timm {r.env['timm']}. "
          f"MACs count {profiling.COUNTED_OPS}; FLOPs = 2 x MACs.")


def cmd_blocks(args) -> None:
    from . import models

    model = models.build(args.name, device="meta")
    size = args.size or model.cnncompare.info.default_size
    if args.freeze:
        models.freeze(model, args.freeze, size)
    groups = models.blocks(model, size)
    total, trainable = models.count_params(model)
    if args.json:
        _dump(dict(name=args.name, input_size=size, freeze=args.freeze or "none", params=total,
                   trainable_params=trainable, blocks=[g.to_dict() for g in groups]))
        return
    rows = [[g.name, str(len(g.modules)), fmt_count(g.params), fmt_count(g.trainable),
             "x".join(map(str, g.out_shape)) if g.out_shape else "-", "frozen" if g.frozen else ""] for g in groups]
    print(table(rows, ["block", "layers", "params", "trainable", "output", ""]))
    print(f"\n{args.name} at {size} px, freeze={args.freeze or 'none'}: "
          f"{fmt_count(trainable)} of {fmt_count(total)} parameters train.")


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cnncompare",
                                description="Compare classic CNN image classifiers side by side.")
    sub = p.add_subparsers(dest="command", required=True)

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
    b.add_argument("--freeze", help="none | head | stages:K | layers:N")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_blocks)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


# Later modules (fine-tuning, prediction) add their subcommands here.
_EXTRA_COMMANDS: list[Callable] = []


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
        if os.environ.get("CNNCOMPARE_DEBUG"):
            raise
        msg = str(err).splitlines()[0] if str(err) else ""
        print(f"error: unexpected {type(err).__name__}: {msg} (set CNNCOMPARE_DEBUG=1 for details)", file=sys.stderr)
        return 1
