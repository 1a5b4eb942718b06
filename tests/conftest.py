"""Shared test setup: fully offline, no telemetry, quiet."""

import os
import sys
from pathlib import Path

# Set before gradio / huggingface_hub are imported anywhere.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CNNCOMPARE_OFFLINE", "1")
os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as cnncompare sets it; before torch loads

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
