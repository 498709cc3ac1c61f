"""The single list of kernels (XNNPACK's kernel list, oneDNN's ordered implementation list).

Each op has an ordered list, preferred kernels first and the NumPy reference last, so ``auto``
never comes up empty.  Tests, benchmarks, ``fastconv.kernels()``, ``fastconv kernels`` and the
dispatcher all iterate over it: a kernel is registered, and so tested, by one line here.

Ops and the signature of ``run`` for each:
    conv2d.fwd          run(spec, x, w, bias) -> y
    conv2d.bwd_data     run(spec, grad_y, w)  -> grad_x
    conv2d.bwd_weight   run(spec, grad_y, x)  -> grad_w
    maxpool2d.fwd       run(spec, x)          -> (y, indices)
    maxpool2d.bwd       run(spec, grad_y, indices) -> grad_x
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import dataclasses

from . import nonfinite, reference, winograd
from .c import _lib as c_lib
from .c import direct as c_direct
from .c import im2col as c_im2col
from .c import maxpool as c_maxpool
from .c import winograd as c_winograd
from .numba import direct as nb_direct
from .numba import im2col as nb_im2col
from .numba import maxpool as nb_maxpool
from .numba import winograd as nb_winograd

OPS = ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight", "maxpool2d.fwd", "maxpool2d.bwd")
BACKENDS = ("c", "numba", "numpy")


def _always(spec) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Kernel:
    name: str                     # backend.algo[_variant]: "c.direct", "numba.winograd_f4k3"
    op: str                       # one of OPS
    run: Callable = field(repr=False)
    why_not: Callable = field(default=_always, repr=False)  # spec -> reason it cannot serve, or None
    # Accepted max |error| / max |reference| per dtype (tests assert it; an rtol= budget filters on it).
    rtol: dict = field(default_factory=lambda: {"float32": 1e-5, "float64": 1e-10}, repr=False, hash=False)
    # The kernel that serves this one's calls holding inf or NaN, where its arithmetic would put
    # them elsewhere than PyTorch (fastconv/nonfinite.py); None: it computes them itself.
    nonfinite: Optional[str] = None
    # Bitwise the same result run to run and at any thread count on one machine (tasks write
    # disjoint outputs and each sums in a fixed order; tests/test_reliability.py holds it to it).
    # Not across machines: OpenBLAS and the C microkernels pick their code by CPU.
    deterministic: bool = True

    @property
    def backend(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def algo(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def family(self) -> str:
        """The algorithm family a variant belongs to: winograd_f4k3 -> winograd."""
        return self.algo.split("_", 1)[0]

    def refusal(self, spec) -> Optional[str]:
        """Why this kernel cannot serve spec, as '<name>: <reason>', or None."""
        if self.backend == "c" and c_lib.UNAVAILABLE:
            return f"{self.name}: {c_lib.UNAVAILABLE}"
        reason = self.why_not(spec)
        return f"{self.name}: {reason}" if reason else None


def _rerouting(kernel: Kernel, fallback: Kernel, *, data: bool, weights: bool) -> Kernel:
    """kernel, with its calls holding inf or NaN (in the data and/or the weights) handed to
    fallback, the backend's im2col (fastconv/nonfinite.py says which kernels and why)."""
    run = nonfinite.guarded(kernel.name, kernel.run, fallback.run, data=data, weights=weights)
    return dataclasses.replace(kernel, run=run, nonfinite=fallback.name)


def _winograd(name: str, op: str, m: int, run: Callable, fallback: Kernel) -> Kernel:
    """A Winograd F(m x m, 3 x 3) kernel: its eligibility and error bound; data holding inf or NaN
    is checked per call, weights through their cached transform (which raises NonFinite)."""
    return _rerouting(Kernel(name, op, run, winograd.why_not, rtol=winograd.RTOL[m]), fallback,
                      data=True, weights=False)


def _direct_backward_data(name: str, run: Callable, fallback: Kernel) -> Kernel:
    return _rerouting(Kernel(name, "conv2d.bwd_data", run), fallback, data=False, weights=True)


# im2col's limits are OpenBLAS's, the same in both backends
C_IM2COL_FWD = Kernel("c.im2col", "conv2d.fwd", c_im2col.conv2d_forward, nb_im2col.why_not)
NB_IM2COL_FWD = Kernel("numba.im2col", "conv2d.fwd", nb_im2col.conv2d_forward, nb_im2col.why_not)
C_IM2COL_BWD_DATA = Kernel("c.im2col", "conv2d.bwd_data", c_im2col.conv2d_backward_data, nb_im2col.why_not)
NB_IM2COL_BWD_DATA = Kernel("numba.im2col", "conv2d.bwd_data", nb_im2col.conv2d_backward_data, nb_im2col.why_not)


KERNELS: tuple[Kernel, ...] = (
    # conv2d forward
    Kernel("c.direct", "conv2d.fwd", c_direct.conv2d_forward),
    C_IM2COL_FWD,
    _winograd("c.winograd_f2k3", "conv2d.fwd", 2, c_winograd.conv2d_forward_f2k3, C_IM2COL_FWD),
    _winograd("c.winograd_f4k3", "conv2d.fwd", 4, c_winograd.conv2d_forward_f4k3, C_IM2COL_FWD),
    NB_IM2COL_FWD,
    _winograd("numba.winograd_f2k3", "conv2d.fwd", 2, nb_winograd.F2K3.conv2d_forward, NB_IM2COL_FWD),
    _winograd("numba.winograd_f4k3", "conv2d.fwd", 4, nb_winograd.F4K3.conv2d_forward, NB_IM2COL_FWD),
    Kernel("numba.direct", "conv2d.fwd", nb_direct.conv2d_forward),
    Kernel("numpy.reference", "conv2d.fwd", reference._conv2d),
    # conv2d backward: input gradient and weight gradient are chosen separately; the direct
    # kernels run their forward engine on the transposed problems of transpose.py
    C_IM2COL_BWD_DATA,
    _winograd("c.winograd_f2k3", "conv2d.bwd_data", 2, c_winograd.conv2d_backward_data_f2k3, C_IM2COL_BWD_DATA),
    _winograd("c.winograd_f4k3", "conv2d.bwd_data", 4, c_winograd.conv2d_backward_data_f4k3, C_IM2COL_BWD_DATA),
    NB_IM2COL_BWD_DATA,
    _winograd("numba.winograd_f2k3", "conv2d.bwd_data", 2, nb_winograd.F2K3.conv2d_backward_data, NB_IM2COL_BWD_DATA),
    _winograd("numba.winograd_f4k3", "conv2d.bwd_data", 4, nb_winograd.F4K3.conv2d_backward_data, NB_IM2COL_BWD_DATA),
    _direct_backward_data("c.direct", c_direct.conv2d_backward_data, C_IM2COL_BWD_DATA),
    _direct_backward_data("numba.direct", nb_direct.conv2d_backward_data, NB_IM2COL_BWD_DATA),
    Kernel("numpy.reference", "conv2d.bwd_data", reference._conv2d_grad_input),
    Kernel("c.im2col", "conv2d.bwd_weight", c_im2col.conv2d_backward_weight, nb_im2col.why_not),
    Kernel("numba.im2col", "conv2d.bwd_weight", nb_im2col.conv2d_backward_weight, nb_im2col.why_not),
    Kernel("c.direct", "conv2d.bwd_weight", c_direct.conv2d_backward_weight),
    Kernel("numba.direct", "conv2d.bwd_weight", nb_direct.conv2d_backward_weight),
    Kernel("numpy.reference", "conv2d.bwd_weight", reference._conv2d_grad_weight),
    # max-pool
    Kernel("c.maxpool", "maxpool2d.fwd", c_maxpool.max_pool2d_forward),
    Kernel("numba.maxpool", "maxpool2d.fwd", nb_maxpool.max_pool2d_forward),
    Kernel("numpy.reference", "maxpool2d.fwd", reference._max_pool2d),
    Kernel("c.maxpool", "maxpool2d.bwd", c_maxpool.max_pool2d_backward),
    Kernel("numba.maxpool", "maxpool2d.bwd", nb_maxpool.max_pool2d_backward),
    Kernel("numpy.reference", "maxpool2d.bwd", reference._max_pool2d_backward),
)


def kernels(op: Optional[str] = None) -> tuple[Kernel, ...]:
    """Every registered kernel, or those of one op, in preference order."""
    if op is not None and op not in OPS:
        raise ValueError(f"kernels: op={op!r} is not one of {', '.join(OPS)}")
    return tuple(k for k in KERNELS if op is None or k.op == op)
