"""inf and NaN exactly where PyTorch puts them, whichever kernel runs (API.md).

Two kinds of kernel would put them elsewhere, so their calls holding inf or NaN are handed to
another kernel of the same backend (its im2col), and ``explain`` and ``fastconv kernels`` name it:

- **Winograd** (forward and both gradients).  A tile mixes all its input pixels (B^T d B) and the
  filter transform all its taps (G g G^T), so one inf gives inf - inf = NaN across a whole tile:
  48 NaN outputs of an F(4x4) layer where the oracle has 27 infs, and NaN in the 64 outputs of a
  channel where one +inf weight gives PyTorch +inf.  The data (x, or grad_y for the grad of input)
  is checked on every call by its sum, 0.16 ms on VGG-16 conv3_2's input (1.5% of its F(4x4)
  time); the weights through their transform, which the filter cache keeps with its finiteness:
  free on a cache hit (fastconv/common/winograd.py raises NonFinite).  A transform is finite exactly when
  the weights are, but for an overflow, which then also goes to im2col.  The weight gradient
  checks its result instead, a pass over the weights' size rather than two over the data's (VGG-16
  conv1_2: 0.15 MB against 25.7 MB): every input value reaches some transformed position with a
  nonzero coefficient (BT and AT^T have full rank), every position reaches grad_w (no zero row in
  G), and inf or NaN never cancels to a finite value, so grad_w is finite exactly when grad_y and x
  are (but for an overflow, which then also goes to im2col).
- **direct and depthwise grad of input.**  They run the forward engine on the transposed problem
  (fastconv/common/transpose.py), whose zero padding a NaN or inf weight then multiplies (0 x NaN = NaN),
  where PyTorch (and im2col's col2im) never forms those products: a NaN corner tap of a 6x6 layer
  with padding 1 gave 36 NaNs against PyTorch's 25.  The weights are summed on each call: every
  weight is read once per output pixel by the call itself, so this costs a fraction of it.
"""
from __future__ import annotations

import collections
import math
from typing import Callable

import numpy as np

# kernel name -> calls this process rerouted (explain shows it)
REROUTED: collections.Counter = collections.Counter()


class NonFinite(Exception):
    """Raised inside a guarded kernel that finds its weights non-finite: the guard reroutes."""


def finite(a: np.ndarray) -> bool:
    """Whether a holds only finite values, from one cheap pass: its sum (inf or NaN anywhere makes
    it non-finite; an overflow only sends a finite array the exact way too).  Quietly: +inf and
    -inf summed are NaN, which is the answer here, not a warning for the caller."""
    with np.errstate(over="ignore", invalid="ignore"):
        return math.isfinite(a.sum())


def guarded(name: str, run: Callable, fallback: Callable, *, data: bool, weights: bool) -> Callable:
    """run(spec, data, w, *rest), with the calls whose data (when ``data``) or weights (when
    ``weights``; run itself may also raise NonFinite) hold inf or NaN handed to fallback."""
    def checked(spec, d, w, *rest, **kw):
        if (not data or finite(d)) and (not weights or finite(w)):
            try:
                return run(spec, d, w, *rest, **kw)
            except NonFinite:
                pass
        REROUTED[name] += 1
        return fallback(spec, d, w, *rest, **kw)

    checked.__doc__ = run.__doc__
    return checked


__all__ = ["NonFinite", "REROUTED", "finite", "guarded"]
