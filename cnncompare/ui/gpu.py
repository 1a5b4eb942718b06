"""ZeroGPU support in one place.

On a Hugging Face ZeroGPU Space, GPU work must run inside a function decorated with
`spaces.GPU`; elsewhere the `spaces` package is absent (or returns the function unchanged),
so the app runs the same code on a laptop, a CPU Space or a dedicated GPU.
"""

from __future__ import annotations

from collections.abc import Callable


def gpu(duration: int = 60) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` when the `spaces` package is importable, else a no-op decorator."""
    try:
        import spaces  # type: ignore[import-not-found]
    except Exception:  # not on Spaces (ImportError), or a broken install: run unchanged
        return lambda fn: fn
    return spaces.GPU(duration=duration)
