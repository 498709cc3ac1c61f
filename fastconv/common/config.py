"""Process-wide settings other than threads: the workspace budget of the im2col kernels, and the
reading of byte budgets from the environment (also the Winograd filter cache's bound).

The column matrix of a large layer (VGG-16's first layers: over 100 MB per image) is unfolded in
chunks of output rows so that the buffers of all threads together stay within this budget
(at least one output row per thread, whatever the budget).  Default 64 MiB, or
FASTCONV_WORKSPACE_MB.
"""
from __future__ import annotations

import contextvars
import os
import warnings

DEFAULT_BYTES = 64 << 20


def mb_from_environment(name: str, default: int) -> int:
    """Bytes from the environment variable name, given in MiB; default when unset or invalid."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        mb = float(value)
        if mb <= 0:
            raise ValueError
        return int(mb * (1 << 20))
    except ValueError:
        warnings.warn(f"fastconv: ignoring {name}={value!r}: expected a positive number",
                      RuntimeWarning, stacklevel=2)
        return default


_workspace_bytes = mb_from_environment("FASTCONV_WORKSPACE_MB", DEFAULT_BYTES)


def workspace_bytes() -> int:
    return _workspace_bytes


def set_workspace_bytes(n: int) -> None:
    """Bound the im2col kernels' scratch memory (bytes, all threads together)."""
    global _workspace_bytes
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_workspace_bytes: n={n!r} must be an int")
    if n < 1:
        raise ValueError(f"set_workspace_bytes: n={n} must be positive")
    _workspace_bytes = n


# Whether the calls in this context get new weights every time (a training step): set by callers
# that know (fastconv.torch's autograd path, for weights that get gradients).  The dispatcher keeps
# its choices for it apart and times Winograd with its filter transform, and Winograd's filter
# cache neither keeps nor compares those weights (fastconv/common/winograd.py): a kept transform
# would never be used again, and timing with it made F4 look 3.7x faster than it runs in a step
# (VGG-size 512 x 512 layer on 8x7x7: 4.8 ms with the transform kept, 18 when weights change).
WEIGHTS_VARY: contextvars.ContextVar = contextvars.ContextVar("fastconv_weights_vary", default=False)
