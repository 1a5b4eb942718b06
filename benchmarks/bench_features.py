"""Feature maps of the classic four at 224 px: time (cold: the first request, warm: the model already kept), the
memory it adds and the bytes a page receives (the PNG grids), on this machine.

    python benchmarks/bench_features.py

Each model runs in a fresh process, built once (ImageNet weights where they can be had, else random ones, as the
app does); the baseline is a user's bare `model(x)` on the same input in that process, after one warm-up pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import report  # noqa: E402

MODELS = ("alexnet", "vgg16", "googlenet", "resnet50")
CHILD = r"""
import io, json, resource, sys, time
import torch
from PIL import Image
from cnncompare import featuremaps, inference
name, image = sys.argv[1], sys.argv[2]
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
img = inference.load_image(image)
loaded = inference.imagenet_model(name, device="cpu")
before = rss()
bare = inference.preprocess(img, loaded.model, 224, fit="squash")
with torch.inference_mode():
    loaded.model(bare)  # warm-up
t = time.perf_counter()
with torch.inference_mode():
    loaded.model(bare)
bare_s = time.perf_counter() - t
t = time.perf_counter(); fm = featuremaps.feature_maps(img, loaded, 224, 6); cold = time.perf_counter() - t
t = time.perf_counter(); fm = featuremaps.feature_maps(img, loaded, 224, 6); warm = time.perf_counter() - t
sent = 0
for pic in (featuremaps.grid_image(fm), featuremaps.kernels_image(fm)):
    if pic is not None:
        buf = io.BytesIO(); pic.save(buf, "PNG"); sent += len(buf.getvalue())
print(json.dumps(dict(cold=cold, warm=warm, bare=bare_s, grown=rss() - before, sent=sent, weights=loaded.weights)))
"""


def main() -> None:
    image = sorted((ROOT / "assets" / "examples").glob("*.jpg"))[0]
    rows = []
    for name in MODELS:
        out = (
            subprocess.run(
                [sys.executable, "-c", CHILD, name, str(image)], cwd=ROOT, capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        r = json.loads(out)
        rows.append(
            [
                name,
                f"{r['bare'] * 1000:.0f}",
                f"{r['cold'] * 1000:.0f}",
                f"{r['warm'] * 1000:.0f}",
                f"{r['grown']:.0f}",
                f"{r['sent'] / 1024:.0f}",
                r["weights"],
            ]
        )
    report(
        "Feature maps (classic four, 224 px)",
        ["model", "bare forward ms", "maps cold ms", "maps warm ms", "RSS growth MB", "PNG sent KB", "weights"],
        rows,
        notes="bare: a user's own `model(x)` in the same fresh process, after a warm-up pass; cold: the first "
        "feature-map request (hooks, the pass, scaling, the kernels); warm: the same again. The page receives the PNG "
        "grids (stages and first-layer filters).",
        command="python benchmarks/bench_features.py",
    )


if __name__ == "__main__":
    main()
