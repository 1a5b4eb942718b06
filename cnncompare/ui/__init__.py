"""The Gradio face of cnncompare: the tabs and their panels, no engine logic.

from cnncompare.ui import build_app, launch
launch(build_app())

`python -m cnncompare.ui [--host H] [--port P] [--runs DIR]` (what `python app.py` and `cnncompare app` run).
"""

try:  # On a ZeroGPU Space, `spaces` must be imported before torch; elsewhere it is absent.
    import spaces  # noqa: F401
except ImportError:
    pass

from .app import build_app, launch, main  # noqa: E402

__all__ = ["build_app", "launch", "main"]
