"""cnncompare's web app: `python app.py` serves it on http://127.0.0.1:7860 (or GRADIO_SERVER_NAME/PORT).

Works offline: the `shapes` dataset is generated here, and models fall back to random weights
(with a note saying so) when pretrained weights cannot be downloaded.

Safe to open to a class and to anonymous visitors: each visitor's runs are private, file inputs
take only uploads, and the work waits in a fair queue; docs/SERVER.md lists the limits and the
environment variables that set them.
"""

try:  # On a ZeroGPU Space, `spaces` must be imported before torch; elsewhere it is absent.
    import spaces  # noqa: F401
except ImportError:
    pass

import sys  # noqa: E402

from cnncompare.ui import build_app, launch, main  # noqa: E402

__all__ = ["build_app", "launch"]

if __name__ == "__main__":  # the same as `cnncompare app` (--host, --port, --runs; --help says so)
    sys.exit(main())
