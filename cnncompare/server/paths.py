"""Where the server writes what it hands to browsers: gradio's upload folder, named without importing gradio.

gradio serves a file a handler returns without copying it when it lies inside its upload folder
(`$GRADIO_TEMP_DIR`, else `<tmp>/gradio`: `gradio.utils.get_upload_folder`), so downloads are written there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["upload_folder"]


def upload_folder() -> Path:
    """gradio's upload folder: $GRADIO_TEMP_DIR, else <tmp>/gradio (as gradio.utils.get_upload_folder)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
