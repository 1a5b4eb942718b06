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
