"""The forward kernels' activation, the twin of csrc/fc_internal.h's FC_ACTIVATE: every Numba
forward applies it to outputs it has just written (still in cache), with the (code, slope) of
fastconv.spec.activation_code.  Only y < 0 (or y > 6) is replaced and a comparison with NaN is
false, so NaN stays NaN, as in torch's relu, relu6 and leaky_relu (FASTMATH has no nnan).

The loops are written so LLVM vectorizes them: relu as a clip at a bound it cannot fold (+inf,
kept by `>`), leaky_relu as a product by a selected factor.  The one-select forms
(``y[i] = 0 if v < 0 else v``, ``if v < 0: y[i] = ...``) stayed scalar: 47-50 us against 8-9 us
for 100,000 float32 outputs (Zen 3, AVX2)."""
import numpy as np

from ._options import helper


@helper
def activate(y, act, slope):
    """y, a 1-D run of outputs, in place: act 0 none, 1 relu, 2 relu6, 3 leaky_relu(slope)."""
    if act == 1 or act == 2:
        zero, hi = y.dtype.type(0), y.dtype.type(6 if act == 2 else np.inf)
        for i in range(y.shape[0]):
            v = y[i]
            v = zero if v < zero else v
            y[i] = hi if v > hi else v
    elif act == 3:
        s, one = y.dtype.type(slope), y.dtype.type(1)
        for i in range(y.shape[0]):
            v = y[i]
            y[i] = v * (s if v < 0 else one)
