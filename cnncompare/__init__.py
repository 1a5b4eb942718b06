"""cnncompare: put classic CNN image classifiers side by side.

The engine (this package) never imports gradio; `app.py` and `python -m cnncompare`
are thin faces over the same functions.
"""

import os

# OpenMP threads that spin while waiting collapse when two computations share few cores
# (a training run beside a profile in the app, or another process): resnet18 at batch 1 went
# from 65 ms to 710 ms on a busy 2-core machine. Passive waiting avoids that. It only takes
# effect if set before torch is imported; an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
