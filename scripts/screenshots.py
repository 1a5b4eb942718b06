"""Take screenshots of every tab of the running app, for docs/screenshots/.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--runs DIR]

Starts the app in this process (offline, like the tests: random weights, generated `shapes`
data), drives it with headless Chromium (Debian's /usr/bin/chromium) and writes
architectures.png, predict.png, finetune.png (after a real run of the Learn tab's optimizer preset:
three ResNet-18 runs from scratch; also finetune-1280x720.png and finetune-390.png) and learn.png.
Takes a few minutes on a 2-core CPU (latency measurements and the training run are real).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for key, value in dict(
    GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", CNNCOMPARE_OFFLINE="1"
).items():
    os.environ.setdefault(key, value)

from tests.support import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_text(page, selector: str, text: str, timeout_s: float, *more: str) -> None:
    """Wait until the element's text contains `text` (and every string in `more`)."""
    page.wait_for_function(
        "([sel, texts]) => { const el = document.querySelector(sel);"
        " return el && texts.every(t => el.innerText.includes(t)); }",
        arg=[selector, [text, *more]],
        timeout=timeout_s * 1000,
    )


def shoot(page, path: Path) -> None:
    time.sleep(1.5)  # let plots finish drawing
    page.screenshot(path=str(path), full_page=True)
    print("wrote", path, flush=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    time.sleep(1.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--runs", help="runs folder for the app (default: a fresh temporary folder)")
    parser.add_argument("--only", nargs="*", choices=["architectures", "finetune", "predict", "learn"])
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from cnncompare.ui import build_app, launch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="cnncompare-shots-"))
    demo = build_app(runs)
    port = free_port()
    launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    only = set(args.only or ["architectures", "finetune", "predict", "learn"])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
            page.goto(f"http://127.0.0.1:{port}/")
            wait_text(page, "#arch-note", "profiled at", 120)

            if "architectures" in only:  # the classic four at 224 px, latency measured on this machine
                page.click("#arch-compare")
                wait_text(page, "#arch-note", "Profiling", 60)
                wait_text(page, "#arch-note", "4 of 4 model(s) profiled", 600, "Latency: batch 1")
                wait_text(page, "#arch-blocks-note", "resnet50", 60)
                shoot(page, out / "architectures.png")

            if only & {"finetune", "predict"}:  # a short real run: the optimizer preset of the Learn tab
                open_tab(page, "Learn")
                page.click("#preset-optimizers")
                wait_text(page, "#ft-preset", "Which optimizer?", 30)
                page.click("#ft-start")
                wait_text(page, "#ft-status", "Done", 900)
                page.wait_for_function(  # the confusion gallery has filled in (its note names a cell)
                    "() => { const el = document.querySelector('#g-note');"
                    " return el && el.innerText.trim() && !el.innerText.includes('After a comparison'); }",
                    timeout=300_000,
                )
                page.locator("#g-images").scroll_into_view_if_needed()  # its images load when they come into view
                page.wait_for_function(
                    "() => { const imgs = [...document.querySelectorAll('#g-images img')];"
                    " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                    timeout=60_000,
                )
                print("gallery images:", page.eval_on_selector_all("#g-images img", "imgs => imgs.length"))
                shoot(page, out / "finetune.png")
                # what a classroom projector shows (Start, status and curves together), and a phone
                page.set_viewport_size({"width": 1280, "height": 720})
                page.evaluate("() => window.scrollTo(0, 0)")
                time.sleep(1.5)
                page.screenshot(path=str(out / "finetune-1280x720.png"))
                page.set_viewport_size({"width": 390, "height": 844})
                time.sleep(1.5)
                page.screenshot(path=str(out / "finetune-390.png"))
                page.set_viewport_size({"width": 1400, "height": 1000})

            if "predict" in only:  # an example picture, the classic four (random weights) and a fine-tuned run
                open_tab(page, "Predict")
                page.get_by_text("star", exact=True).first.click()
                page.locator("#pred-runs input").click()
                page.get_by_role("option").filter(has_text="optimizer=adam").first.click()  # the Adam run
                page.keyboard.press("Escape")
                page.click("#pred-go")
                wait_text(page, "#pred-note", "model(s).", 300)
                page.wait_for_selector("#pred-gallery img")
                shoot(page, out / "predict.png")

            if "learn" in only:
                open_tab(page, "Learn")
                shoot(page, out / "learn.png")
            browser.close()
    finally:
        demo.close()
        if not args.runs:  # the temporary runs folder holds weights: do not leave them behind
            shutil.rmtree(runs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
