"""The Gradio face of cnncompare: one module per tab, no engine logic.

from cnncompare.ui import build_app, launch
launch(build_app())
"""

from .app import build_app, launch

__all__ = ["build_app", "launch"]
