"""ZeroGPU support in one place.

On a Hugging Face ZeroGPU Space, GPU work must run inside a function decorated with
`spaces.GPU`; elsewhere the `spaces` package is absent (or returns the function unchanged),
so the app runs the same code on a laptop, a CPU Space or a dedicated GPU.
"""

from __future__ import annotations

from collections.abc import Callable


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (the `spaces` package is there and says so)."""
    try:
        import spaces.config  # type: ignore[import-not-found]
    except Exception:
        return False
    return bool(getattr(spaces.config.Config, "zero_gpu", False))


def gpu(duration: int | Callable[..., int] = 60) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` when the `spaces` package is importable, else a no-op decorator.

    `duration` may be a function of the decorated function's arguments (ZeroGPU's dynamic
    duration): fine-tuning asks for what its plan needs (`compare.gpu_duration`).
    """
    try:
        import spaces  # type: ignore[import-not-found]
    except Exception:  # not on Spaces (ImportError), or a broken install: run unchanged
        return lambda fn: fn
    return spaces.GPU(duration=duration)
