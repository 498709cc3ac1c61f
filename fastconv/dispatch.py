"""Choosing a kernel for a spec.

The dispatcher never names a kernel: it filters the registry by the caller's ``algo`` and
``backend`` and by each kernel's own refusal, and takes the first eligible one in the registry's
preference order (the registry puts the NumPy reference last, so ``auto`` always finds one).
Measured choice and the tuning cache come with the dispatcher issue; this is its ESTIMATE mode.
"""
from __future__ import annotations

from typing import Optional

from .registry import BACKENDS, Kernel, kernels


def _matches(kernel: Kernel, algo: str, backend: str) -> bool:
    return (backend == "auto" or kernel.backend == backend) and \
        (algo == "auto" or algo in (kernel.algo, kernel.family))


def choose(op: str, spec, algo: str = "auto", backend: str = "auto", rtol: Optional[float] = None,
           *, caller: str) -> Kernel:
    """The kernel that will run op on spec, or ValueError naming every refusal."""
    if not isinstance(backend, str) or backend not in ("auto",) + BACKENDS:
        raise ValueError(f"{caller}: backend={backend!r} is not one of 'auto', " + ", ".join(map(repr, BACKENDS)))
    named = [k for k in kernels(op) if _matches(k, algo, backend)]
    if not named:
        known = sorted({k.algo for k in kernels(op)} | {k.family for k in kernels(op)})
        raise ValueError(f"{caller}: no {op} kernel matches algo={algo!r}, backend={backend!r} "
                         f"(algos: 'auto', {', '.join(map(repr, known))})")
    reasons = []
    for kernel in named:
        reason = kernel.refusal(spec)
        if reason is None and rtol is not None and kernel.rtol[spec.dtype] > rtol:
            reason = f"{kernel.name}: error bound {kernel.rtol[spec.dtype]:.0e} is over the rtol={rtol:g} budget"
        if reason is None:
            return kernel
        reasons.append(reason)
    raise ValueError(f"{caller}: no kernel can serve this problem: " + "; ".join(reasons))
