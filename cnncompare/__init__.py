"""cnncompare: put classic CNN image classifiers side by side.

The engine (this package) never imports gradio; `app.py` and `python -m cnncompare`
are thin faces over the same functions.
"""

__version__ = "0.2.0"
