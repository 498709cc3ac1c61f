"""The single list of kernels (XNNPACK's kernel list, oneDNN's ordered implementation list), and
what every reader of it needs to know about ops and backends.

- ``OPS``: one record per op (conv2d.fwd, conv2d.bwd_data, conv2d.bwd_weight, maxpool2d.fwd,
  maxpool2d.bwd): its pass and layer kind, the spec its kernels take, the arrays ``kernel.run``
  takes after the spec, the public function that runs it, the peers' calls for it (torch, ONNX
  Runtime: fastconv/peers.py), its FLOPs.  The
  tuner, ``fastconv bench``, the benchmark suite, ``Plan.repro`` and the tests read the protocol
  here instead of spelling it out.
- ``BACKENDS``: every backend package's record (fastconv/backend.py): why it is unavailable, its
  fingerprint, its status line.  No module above this one knows which backends exist.
- ``KERNELS``: one ordered tuple, the NumPy reference last in each op, so ``auto`` never comes up
  empty.  Tests, benchmarks, ``fastconv.kernels()``, ``fastconv kernels`` and the dispatcher all
  iterate over it: a kernel is registered, and so tested, by one line here.
- The heuristic's preference (``FAMILY_RANK``, ``Kernel.preference``): what ``auto`` picks when
  nothing is timed.  Adding a family means its files and rows here, never the dispatcher.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from . import c, numba, peers, reference
from .c import depthwise as c_depthwise
from .c import direct as c_direct
from .c import direct_flat as c_direct_flat
from .c import im2col as c_im2col
from .c import maxpool as c_maxpool
from .c import winograd as c_winograd
from .common import depthwise, flat, im2col, nonfinite, winograd
from .numba import depthwise as nb_depthwise
from .numba import direct as nb_direct
from .numba import direct_flat as nb_direct_flat
from .numba import im2col as nb_im2col
from .numba import maxpool as nb_maxpool
from .numba import winograd as nb_winograd
from .spec import ConvSpec, PoolBackwardSpec, PoolSpec, conv_hyper, pool_hyper

# ----------------------------------------------------------------------------- backends

BACKENDS = {b.name: b for b in (c.BACKEND, numba.BACKEND, reference.BACKEND)}


# ----------------------------------------------------------------------------- ops

@dataclass(frozen=True)
class Op:
    """What every kernel of one op shares: how to call it, publicly and in torch, and what it costs."""
    name: str                 # "conv2d.bwd_data"
    layer: str                # the layer kind it belongs to (fastconv.nets): "conv" | "pool"
    pass_: str                # "fwd" | "bwd"
    spec_type: type           # the spec its kernels take
    args: tuple               # kernel.run(spec, *arrays): the arrays' names (``shapes`` gives them)
    public: str               # the fastconv function that runs it
    public_args: tuple        # that function's array arguments, by name
    hyper: Callable = field(repr=False)   # spec -> that function's keyword arguments
    algo_arg: Optional[str] = None        # that function's argument naming this op's kernel
    output: Optional[int] = None          # the function returns several ops' results: this op's
    torch: Optional[Callable] = field(default=None, repr=False)  # (layer spec, tensors) -> a call
    # (layer spec, arrays, threads) -> a call, or None for a dtype it lacks; None: no such op in it
    onnxruntime: Optional[Callable] = field(default=None, repr=False)

    def spec_of(self, layer_spec):
        """This op's spec for a layer's (ConvSpec or PoolSpec)."""
        return layer_spec.backward_spec() if self.spec_type is PoolBackwardSpec else layer_spec

    def flops(self, spec) -> Optional[int]:
        """FLOPs of one call (the direct algorithm's multiply-adds; both backward passes do as many)."""
        return spec.flops if self.layer == "conv" else None

    def output_of(self, result):
        """This op's part of its public function's result."""
        return result if self.output is None else result[self.output]

    def arguments(self, spec, rng) -> tuple:
        """Random arguments of kernel.run after the spec, drawn in the spec's dtype."""
        data = draw(spec, self.args, rng)
        return tuple(data[n] for n in self.args)


_CONV = dict(layer="conv", spec_type=ConvSpec, hyper=conv_hyper)
_CONV_BWD = dict(_CONV, pass_="bwd", public="conv2d_backward", public_args=("grad_y", "x", "w"))
OPS: dict[str, Op] = {op.name: op for op in (
    Op("conv2d.fwd", pass_="fwd", args=("x", "w", "bias"), public="conv2d", public_args=("x", "w", "bias"),
       algo_arg="algo", torch=peers.torch_conv("fwd"), onnxruntime=peers.onnxruntime_conv, **_CONV),
    Op("conv2d.bwd_data", args=("grad_y", "w"), algo_arg="algo", output=0, torch=peers.torch_conv("bwd_data"),
       **_CONV_BWD),
    Op("conv2d.bwd_weight", args=("grad_y", "x"), algo_arg="weight_algo", output=1,
       torch=peers.torch_conv("bwd_weight"), **_CONV_BWD),
    Op("maxpool2d.fwd", "pool", "fwd", PoolSpec, ("x",), "max_pool2d", ("x",), pool_hyper,
       torch=peers.torch_pool("fwd"), onnxruntime=peers.onnxruntime_pool),
    Op("maxpool2d.bwd", "pool", "bwd", PoolBackwardSpec, ("grad_y", "indices"), "max_pool2d_backward",
       ("grad_y", "indices"), lambda spec: dict(input_shape=spec.input_shape), torch=peers.torch_pool("bwd")),
)}

# The ops of each pass, per layer kind (tune's passes, bench's rows).
PASSES = {p: {kind: tuple(o.name for o in OPS.values() if o.pass_ == p and o.layer == kind)
              for kind in ("conv", "pool")} for p in ("fwd", "bwd")}


def shapes(spec) -> dict:
    """{array name: (shape, dtype)} of every array an op of spec's type reads or writes."""
    if isinstance(spec, ConvSpec):
        return {"x": (spec.input_shape, spec.dtype), "w": (spec.weight_shape, spec.dtype),
                "bias": ((spec.c_out,), spec.dtype), "grad_y": (spec.output_shape, spec.dtype)}
    out = spec.output_shape if isinstance(spec, PoolSpec) else (spec.n, spec.c, spec.out_h, spec.out_w)
    named = {"grad_y": (out, spec.dtype), "indices": (out, "int64")}
    return {"x": (spec.input_shape, spec.dtype), **named} if isinstance(spec, PoolSpec) else named


def draw(spec, names, rng) -> dict:
    """Random arrays of these names for spec, in its dtype (no float64 temporary of the problem's
    size).  Indices are argmaxes: the reference's, of the drawn x, for a layer's PoolSpec (the
    pattern a real backward scatters), uniform in the plane for a PoolBackwardSpec alone."""
    info = shapes(spec)
    data = {}
    for name in names:
        shape, dtype = info[name]
        if name != "indices":
            data[name] = rng.standard_normal(shape, dtype=np.dtype(dtype))
        elif isinstance(spec, PoolSpec):
            x = data["x"] if "x" in data else rng.standard_normal(spec.input_shape, dtype=np.dtype(spec.dtype))
            data["x"], data["indices"] = x, reference._max_pool2d(spec, x)[1]
        else:
            data[name] = rng.integers(0, spec.h * spec.w, size=shape, dtype=np.int64)
    return {n: data[n] for n in names}


def layer_data(layer_spec, rng) -> dict:
    """Every array the ops of one layer read, shared (the backward ops see the forward's x and w;
    a pool's indices are the argmaxes of its x)."""
    kind = "conv" if isinstance(layer_spec, ConvSpec) else "pool"
    return draw(layer_spec, list(dict.fromkeys(n for o in OPS.values() if o.layer == kind for n in o.args)), rng)


# ----------------------------------------------------------------------------- kernels

def _always(spec) -> Optional[str]:
    return None


_TILE = re.compile(r"_f(\d+)k\d+")


@dataclass(frozen=True)
class Kernel:
    name: str                     # backend.algo[_variant]: "c.direct", "numba.winograd_f4k3"
    op: str                       # a key of OPS
    run: Callable = field(repr=False)
    why_not: Callable = field(default=_always, repr=False)  # spec -> reason it cannot serve, or None
    # Accepted max |error| / max |reference| per dtype (tests assert it; an rtol= budget filters on it).
    rtol: dict = field(default_factory=lambda: {"float32": 1e-5, "float64": 1e-10}, repr=False, hash=False)
    # The kernel that serves this one's calls holding inf or NaN, where its arithmetic would put
    # them elsewhere than PyTorch (fastconv/common/nonfinite.py); None: it computes them itself.
    nonfinite: Optional[str] = None
    # Bitwise the same result run to run at one thread count on one machine (tasks write disjoint
    # outputs and each sums in a fixed order; tests/test_reliability.py holds it to it).  Not across
    # machines: OpenBLAS and the C microkernels pick their code by CPU.
    deterministic: bool = True
    # ... and at any thread count: the work's split into sums does not depend on the threads.
    # False where a GEMM is split by the thread count: OpenBLAS's entries depend on the shape of
    # the call they are in (its Haswell sgemm: one 64 x 576 x 784 product against the same in
    # column blocks of 16..128 differs in the last bits), so a split that follows the threads
    # changes the bits.
    thread_invariant: bool = True

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

    @property
    def is_reference(self) -> bool:
        """The NumPy oracle's kernel: it serves only when no other kernel can."""
        return self.backend == reference.BACKEND.name

    @property
    def output_tile(self) -> int:
        """The output tile its name states (winograd_f4k3 -> 4; DESIGN's naming grammar), or 0."""
        m = _TILE.search(self.algo)
        return int(m.group(1)) if m else 0

    def refusal(self, spec) -> Optional[str]:
        """Why this kernel cannot serve spec, as '<name>: <reason>', or None."""
        backend = BACKENDS.get(self.backend)
        if backend is not None and backend.unavailable:
            return f"{self.name}: {backend.unavailable}"
        reason = self.why_not(spec)
        return f"{self.name}: {reason}" if reason else None

    def preference(self, spec) -> tuple:
        """The heuristic's key, lower first: its family's rank for the problem (FAMILY_RANK), then
        the larger output tile (fewest multiplies; the rtol filter has already removed variants too
        inaccurate for the caller).  Ties go to registry order."""
        rank = FAMILY_RANK.get(self.family)
        return (rank(self.op, spec) if rank else UNRANKED, -self.output_tile)


# ----------------------------------------------------------------------------- the heuristic's preference
#
# Measured on VGG-16, ResNet-18, GoogLeNet, AlexNet, LeNet-5 and MobileNet-v2's depthwise layers
# (2-core AMD EPYC, forward and both backward passes): im2col beat direct on the median layer in
# every group, small K and depthwise included, except the depthwise weight gradient, where
# im2col's GEMMs degenerate to dot products, and (on the Intel Xeon, avx512) first layers, whose
# 1-4 input channels give im2col a short K behind a large unfold (``_direct_first``);
# Winograd won about half the layers with >= 64 channels and lost most of those with fewer.
# ``fastconv tune`` and ``explain`` print the heuristic's pick beside the measured best, which is
# how the rule is checked against a machine (README: "Choosing kernels").

WINOGRAD_MIN_CHANNELS = 64  # input and output channels per group where its transforms amortize
UNRANKED = 9  # a family without a rank comes after the ranked ones


def _one_input_channel(op: str, spec) -> bool:
    return op == "conv2d.bwd_weight" and spec.c_in // spec.groups == 1


FIRST_LAYER_CHANNELS = 4  # input channels per group up to which direct is ranked first in the forward


def _direct_first(op: str, spec) -> bool:
    """Where direct beats im2col: the depthwise weight gradient (im2col's GEMMs degenerate to dot
    products) and first layers' forwards (few input channels: im2col's unfold copies each input
    value kh*kw times for a GEMM with a short K).  Measured on the Intel Xeon model 167, avx512,
    batch 1, c.direct / c.im2col time: VGG conv1_1 0.57, AlexNet conv1 0.51, MobileNet-v2 conv1
    0.72, ResNet-18 conv1 0.79; c.direct_flat (before c.direct in registry order) / c.direct on
    ResNet-18 and AlexNet conv1: 0.57-0.64 and 0.77-0.81 (fastconv bench, 2026-12-03)."""
    return _one_input_channel(op, spec) or (op == "conv2d.fwd" and spec.c_in // spec.groups <= FIRST_LAYER_CHANNELS)


# The weight gradient's GEMMs sum over the tiles and read and write M (alpha^2 x og x cg) once each:
# below a 28x28 output (per batch) their k is too short and grad_w's transform G^T M G takes over,
# and with too few tiles per element of M (4x4 tiles x 4096 < og x cg) the GEMMs stream M from
# memory.  Measured (Intel Xeon model 207, avx512, float32, batch 1; c.winograd_f4k3 / c.im2col
# time, benchmarks/weight_grad.py): ResNet-18 56x56 0.81, 28x28 0.96, 14x14 1.29, 7x7 9.9; VGG-16
# 56x56 to 224x224 0.56-0.75, conv4_1 (28x28, 256 -> 512) 0.84, conv4_2 (28x28, 512 -> 512) 1.41,
# conv5_1 (14x14) 3.0; at batch 8 ResNet-18's 14x14 0.59.
WINOGRAD_WEIGHT_MIN_PIXELS = 28 * 28
WINOGRAD_WEIGHT_TILE_SHARE = 4096  # og x cg per 4x4 output tile, at most


def _winograd_weight_amortizes(spec) -> bool:
    tiles = spec.n * -(-spec.out_h // 4) * -(-spec.out_w // 4)
    return (spec.n * spec.out_h * spec.out_w >= WINOGRAD_WEIGHT_MIN_PIXELS and
            tiles * WINOGRAD_WEIGHT_TILE_SHARE >= (spec.c_out // spec.groups) * (spec.c_in // spec.groups))


def _winograd_rank(op: str, spec) -> int:
    amortizes = min(spec.c_in, spec.c_out) // spec.groups >= WINOGRAD_MIN_CHANNELS
    if op == "conv2d.bwd_weight":
        amortizes = amortizes and _winograd_weight_amortizes(spec)
    return 0 if amortizes and winograd.why_not(spec) is None else UNRANKED - 1


FAMILY_RANK: dict = {  # family -> (op, spec) -> rank; max-pool has one family: registry order
    "depthwise": lambda op, spec: 0,  # it serves depthwise problems only, and is made for them
    "winograd": _winograd_rank,
    "im2col": lambda op, spec: 2 if _direct_first(op, spec) else 1,
    "direct": lambda op, spec: 1 if _direct_first(op, spec) else 2,
}


def _rerouting(kernel: Kernel, fallback: Kernel, *, data: bool, weights: bool) -> Kernel:
    """kernel, with its calls holding inf or NaN (in the data and/or the weights) handed to
    fallback, the backend's im2col (fastconv/common/nonfinite.py says which kernels and why)."""
    run = nonfinite.guarded(kernel.name, kernel.run, fallback.run, data=data, weights=weights)
    return dataclasses.replace(kernel, run=run, nonfinite=fallback.name)


def _winograd(name: str, op: str, m: int, run: Callable, fallback: Kernel) -> Kernel:
    """A Winograd F(m x m, 3 x 3) kernel: its eligibility and error bound; data holding inf or NaN
    is checked per call, weights through their cached transform (which raises NonFinite).  Numba's
    splits its GEMMs into tasks by the thread count (fastconv/numba/winograd.py); C's by its
    blocks of tiles."""
    return _rerouting(Kernel(name, op, run, winograd.why_not, rtol=winograd.RTOL[m],
                             thread_invariant=not name.startswith("numba.")), fallback,
                      data=True, weights=False)


def _winograd_weight(name: str, m: int, run: Callable, fallback: Kernel) -> Kernel:
    """A Winograd F(m x m, 3 x 3) weight gradient: it checks its own result, which is finite exactly
    when both of its arrays are (and nothing overflowed; common/nonfinite.py), and raises NonFinite."""
    return _rerouting(Kernel(name, "conv2d.bwd_weight", run, winograd.why_not, rtol=winograd.RTOL[m]), fallback,
                      data=False, weights=False)


def _transposed_backward_data(name: str, run: Callable, fallback: Kernel, why_not: Callable = _always) -> Kernel:
    """A grad of input that multiplies a zero-padded copy of gy by the weights (direct: its backend's
    forward on transpose.py's problems; depthwise: its own phases of one gy copy), where 0 x inf
    would be NaN that PyTorch does not have: its calls with non-finite weights go to fallback
    (common/nonfinite.py)."""
    return _rerouting(Kernel(name, "conv2d.bwd_data", run, why_not), fallback, data=False, weights=True)


# im2col's limits are OpenBLAS's, the same in both backends; so are its splits of the GEMMs by the
# thread count (csrc/im2col.c), which make its bits depend on that count
_IM2COL = dict(why_not=im2col.why_not, thread_invariant=False)
C_IM2COL_FWD = Kernel("c.im2col", "conv2d.fwd", c_im2col.conv2d_forward, **_IM2COL)
NB_IM2COL_FWD = Kernel("numba.im2col", "conv2d.fwd", nb_im2col.conv2d_forward, **_IM2COL)
C_IM2COL_BWD_DATA = Kernel("c.im2col", "conv2d.bwd_data", c_im2col.conv2d_backward_data, **_IM2COL)
NB_IM2COL_BWD_DATA = Kernel("numba.im2col", "conv2d.bwd_data", nb_im2col.conv2d_backward_data, **_IM2COL)
C_IM2COL_BWD_WEIGHT = Kernel("c.im2col", "conv2d.bwd_weight", c_im2col.conv2d_backward_weight, **_IM2COL)
NB_IM2COL_BWD_WEIGHT = Kernel("numba.im2col", "conv2d.bwd_weight", nb_im2col.conv2d_backward_weight, **_IM2COL)


KERNELS: tuple[Kernel, ...] = (
    # conv2d forward (direct_flat before direct: the heuristic's pick for first layers)
    Kernel("c.direct_flat", "conv2d.fwd", c_direct_flat.conv2d_forward, flat.why_not_direct_flat("conv2d.fwd")),
    Kernel("c.direct", "conv2d.fwd", c_direct.conv2d_forward),
    C_IM2COL_FWD,
    _winograd("c.winograd_f2k3", "conv2d.fwd", 2, c_winograd.conv2d_forward_f2k3, C_IM2COL_FWD),
    _winograd("c.winograd_f4k3", "conv2d.fwd", 4, c_winograd.conv2d_forward_f4k3, C_IM2COL_FWD),
    NB_IM2COL_FWD,
    _winograd("numba.winograd_f2k3", "conv2d.fwd", 2, nb_winograd.conv2d_forward_f2k3, NB_IM2COL_FWD),
    _winograd("numba.winograd_f4k3", "conv2d.fwd", 4, nb_winograd.conv2d_forward_f4k3, NB_IM2COL_FWD),
    Kernel("numba.direct_flat", "conv2d.fwd", nb_direct_flat.conv2d_forward, flat.why_not_direct_flat("conv2d.fwd")),
    Kernel("numba.direct", "conv2d.fwd", nb_direct.conv2d_forward),
    Kernel("c.depthwise", "conv2d.fwd", c_depthwise.conv2d_forward, depthwise.why_not),
    Kernel("numba.depthwise", "conv2d.fwd", nb_depthwise.conv2d_forward, depthwise.why_not),
    Kernel("numpy.reference", "conv2d.fwd", reference._conv2d),
    # conv2d backward: input gradient and weight gradient are chosen separately; the direct
    # kernels run their forward engine on the transposed problems of common/transpose.py
    C_IM2COL_BWD_DATA,
    _winograd("c.winograd_f2k3", "conv2d.bwd_data", 2, c_winograd.conv2d_backward_data_f2k3, C_IM2COL_BWD_DATA),
    _winograd("c.winograd_f4k3", "conv2d.bwd_data", 4, c_winograd.conv2d_backward_data_f4k3, C_IM2COL_BWD_DATA),
    NB_IM2COL_BWD_DATA,
    _winograd("numba.winograd_f2k3", "conv2d.bwd_data", 2, nb_winograd.conv2d_backward_data_f2k3, NB_IM2COL_BWD_DATA),
    _winograd("numba.winograd_f4k3", "conv2d.bwd_data", 4, nb_winograd.conv2d_backward_data_f4k3, NB_IM2COL_BWD_DATA),
    _transposed_backward_data("c.direct", c_direct.conv2d_backward_data, C_IM2COL_BWD_DATA),
    _transposed_backward_data("numba.direct", nb_direct.conv2d_backward_data, NB_IM2COL_BWD_DATA),
    _transposed_backward_data("c.direct_flat", c_direct_flat.conv2d_backward_data, C_IM2COL_BWD_DATA,
                              flat.why_not_direct_flat("conv2d.bwd_data")),
    _transposed_backward_data("numba.direct_flat", nb_direct_flat.conv2d_backward_data, NB_IM2COL_BWD_DATA,
                              flat.why_not_direct_flat("conv2d.bwd_data")),
    _transposed_backward_data("c.depthwise", c_depthwise.conv2d_backward_data, C_IM2COL_BWD_DATA, depthwise.why_not),
    _transposed_backward_data("numba.depthwise", nb_depthwise.conv2d_backward_data, NB_IM2COL_BWD_DATA,
                          depthwise.why_not),
    Kernel("numpy.reference", "conv2d.bwd_data", reference._conv2d_grad_input),
    C_IM2COL_BWD_WEIGHT,
    _winograd_weight("c.winograd_f2k3", 2, c_winograd.conv2d_backward_weight_f2k3, C_IM2COL_BWD_WEIGHT),
    _winograd_weight("c.winograd_f4k3", 4, c_winograd.conv2d_backward_weight_f4k3, C_IM2COL_BWD_WEIGHT),
    NB_IM2COL_BWD_WEIGHT,
    _winograd_weight("numba.winograd_f2k3", 2, nb_winograd.conv2d_backward_weight_f2k3, NB_IM2COL_BWD_WEIGHT),
    _winograd_weight("numba.winograd_f4k3", 4, nb_winograd.conv2d_backward_weight_f4k3, NB_IM2COL_BWD_WEIGHT),
    Kernel("c.direct", "conv2d.bwd_weight", c_direct.conv2d_backward_weight),
    Kernel("numba.direct", "conv2d.bwd_weight", nb_direct.conv2d_backward_weight),
    # (no direct_flat: the weight gradient's transposed problem, a kh x kw output under an
    # out_h x out_w filter, is the worst shape for flat rows: fastconv/common/flat.py)
    Kernel("c.depthwise", "conv2d.bwd_weight", c_depthwise.conv2d_backward_weight, depthwise.why_not),
    Kernel("numba.depthwise", "conv2d.bwd_weight", nb_depthwise.conv2d_backward_weight, depthwise.why_not),
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
    """Every registered kernel, or those of one op, in registry order."""
    if op is not None and (not isinstance(op, str) or op not in OPS):
        raise ValueError(f"kernels: op={op!r} is not one of {', '.join(OPS)}")
    return tuple(k for k in KERNELS if op is None or k.op == op)


def kernel(op: str, name: str) -> Optional[Kernel]:
    """The kernel of op registered under name, or None."""
    return next((k for k in KERNELS if k.op == op and k.name == name), None)
