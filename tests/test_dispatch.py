"""Kernel selection: algo/backend naming, refusals that explain themselves, the fallback when the
C extension is missing, and the rtol budget."""
import dataclasses

import numpy as np
import pytest

import fastconv as fc
from fastconv import dispatch, registry
from fastconv.dispatch import choosing
from fastconv.registry import Kernel
from fastconv.spec import ConvSpec, PoolBackwardSpec, PoolSpec

from conftest import rel_err

X = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)


def test_kernels_lists_every_op_with_the_reference_last():
    for op in registry.OPS:
        listed = fc.kernels(op)
        assert listed and listed[-1].name == "numpy.reference"
        assert len({k.name for k in listed}) == len(listed)
    assert {k.name for k in fc.kernels("conv2d.fwd")} >= {"c.direct", "numba.direct", "numpy.reference"}
    with pytest.raises(ValueError, match="op='conv3d'"):
        fc.kernels("conv3d")


def test_kernel_names_follow_the_grammar():
    for k in fc.kernels():
        assert k.backend in registry.BACKENDS and k.op in registry.OPS
        assert k.name == f"{k.backend}.{k.algo}"


def test_auto_follows_the_heuristic_in_estimate_mode():
    """The test session runs in ESTIMATE mode (conftest): auto is the heuristic's pick, never
    the reference while another kernel can serve (test_tuning.py covers the measuring modes)."""
    spec = ConvSpec.from_args(X, W)
    eligible, refused = dispatch.eligible("conv2d.fwd", spec, caller="t")
    chosen = dispatch.choose("conv2d.fwd", spec, caller="t")
    assert chosen is dispatch.heuristic("conv2d.fwd", spec, eligible) and chosen.backend != "numpy"
    assert any(r.startswith("numpy.reference:") for r in refused)
    plan = fc.explain(X.shape, W.shape)
    assert plan.chosen == chosen.name and plan.source == "heuristic" and plan.detail == "mode estimate"


@pytest.mark.parametrize("c_in, family", [(3, "direct"), (4, "direct"), (5, "im2col")])
def test_the_heuristic_ranks_direct_first_for_first_layers_forward(c_in, family):
    # first layers (registry.FIRST_LAYER_CHANNELS input channels or fewer): direct; else im2col,
    # and their gradients keep im2col too
    spec = ConvSpec.from_shapes((1, c_in, 32, 32), (16, c_in, 7, 7), (2, 2), (3, 3), (1, 1), 1, "float32")
    assert dispatch.heuristic("conv2d.fwd", spec, dispatch.eligible("conv2d.fwd", spec, caller="t")[0]).family == family
    for op in ("conv2d.bwd_data", "conv2d.bwd_weight"):
        assert dispatch.heuristic(op, spec, dispatch.eligible(op, spec, caller="t")[0]).family == "im2col"


@pytest.mark.parametrize("n, hw, c, family", [(1, 28, 64, "winograd"), (1, 14, 64, "im2col"), (4, 14, 64, "winograd"),
                                               (1, 28, 512, "im2col"), (4, 28, 512, "winograd")])
def test_the_heuristic_takes_winograd_for_weight_gradients_of_large_outputs(n, hw, c, family):
    # registry.WINOGRAD_WEIGHT_MIN_PIXELS and _TILE_SHARE: the weight gradient's GEMMs sum over the
    # tiles, and read and write the alpha^2 x c x c sums once
    spec = ConvSpec.from_shapes((n, c, hw, hw), (c, c, 3, 3), (1, 1), (1, 1), (1, 1), 1, "float32")
    op = "conv2d.bwd_weight"
    chosen = dispatch.heuristic(op, spec, dispatch.eligible(op, spec, caller="t")[0])
    assert chosen.family == family and (family != "winograd" or chosen.output_tile == 4)
    assert dispatch.heuristic("conv2d.fwd", spec, dispatch.eligible("conv2d.fwd", spec, caller="t")[0]).family == "winograd"


def test_a_hit_is_a_lookup_until_the_kernel_list_changes(monkeypatch):
    spec = ConvSpec.from_args(X, W)
    first = dispatch.choose("conv2d.fwd", spec, caller="t")
    key = ("conv2d.fwd", spec, "auto", "auto", None, fc.get_num_threads(), False, None)  # weights fixed
    assert choosing._memo[key] is first
    only = Kernel("numba.only", "conv2d.fwd", run=fc.kernels("conv2d.fwd")[-1].run)
    monkeypatch.setattr(registry, "KERNELS", (only,) + registry.KERNELS)
    assert dispatch.choose("conv2d.fwd", spec, algo="only", caller="t") is only
    with pytest.raises(TypeError, match=r"algo=\['direct'\] must be a string"):
        fc.conv2d(X, W, algo=["direct"])
    with pytest.raises(ValueError, match="rtol=-1 must be a positive number"):
        fc.conv2d(X, W, rtol=-1)


def test_refusals_name_the_kernel_and_the_reason(monkeypatch):
    picky = Kernel("numba.winograd_f4k3", "conv2d.fwd", run=lambda *a: None,
                   why_not=lambda spec: f"needs a 3x3 filter, got {spec.kh}x{spec.kw}")
    monkeypatch.setattr(registry, "KERNELS", (picky,) + registry.KERNELS)
    w5 = np.zeros((4, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"numba\.winograd_f4k3: needs a 3x3 filter, got 5x5"):
        fc.conv2d(X, w5, algo="winograd")                # the family name
    with pytest.raises(ValueError, match="needs a 3x3 filter"):
        fc.conv2d(X, w5, algo="winograd_f4k3")           # the exact variant
    np.testing.assert_allclose(fc.conv2d(X, w5, padding=2), fc.reference.conv2d(X, w5, padding=2), rtol=1e-4)


def test_without_the_c_extension_c_refuses_with_the_reason_and_auto_uses_numba(monkeypatch):
    # the C backend's record, as fastconv/c/__init__.py fills it in when the extension is missing
    missing = dataclasses.replace(registry.BACKENDS["c"], unavailable="C extension not built (no compiler)")
    monkeypatch.setattr(registry, "BACKENDS", {**registry.BACKENDS, "c": missing})
    spec = ConvSpec.from_args(X, W)
    assert dispatch.choose("conv2d.fwd", spec, caller="t").backend == "numba"
    with pytest.raises(ValueError, match=r"c\.direct: C extension not built \(no compiler\)"):
        fc.conv2d(X, W, backend="c")
    np.testing.assert_allclose(fc.conv2d(X, W), fc.reference.conv2d(X, W), rtol=1e-5, atol=1e-5)
    y, idx = fc.max_pool2d(X, 2)
    np.testing.assert_array_equal(idx, fc.reference.max_pool2d(X, 2)[1])


def test_rtol_budget_filters_kernels():
    spec = ConvSpec.from_args(X, W)
    assert dispatch.choose("conv2d.fwd", spec, rtol=1e-3, caller="t").backend != "numpy"
    # a budget tighter than every kernel's bound leaves only refusals, each saying why
    with pytest.raises(ValueError, match="over the rtol=1e-20 budget"):
        fc.conv2d(X, W, rtol=1e-20)


def test_backward_runs_through_the_registry():
    gy = np.random.default_rng(2).standard_normal((1, 4, 7, 7)).astype(np.float32)
    gx, gw, gb = fc.conv2d_backward(gy, X, W)
    rx, rw, rb = fc.reference.conv2d_backward(gy, X, W)
    # error relative to the largest gradient: a sum of signed values may cancel to near zero
    for got, expected in ((gx, rx), (gw, rw), (gb, rb)):
        assert got.dtype == np.float32 and rel_err(got, expected) <= 1e-5
    assert fc.conv2d_backward(gy, X, W, bias=False)[2] is None


@pytest.mark.parametrize("grad_input,grad_weight,bias", [(False, True, True), (True, False, False), (False, False, True)])
def test_conv2d_grads_computes_only_what_is_asked(grad_input, grad_weight, bias, monkeypatch):
    from fastconv import api
    gy = np.random.default_rng(3).standard_normal((1, 4, 7, 7)).astype(np.float32)
    chosen = []
    real_choose = dispatch.choose
    monkeypatch.setattr(dispatch, "choose", lambda op, *a, **k: chosen.append(op) or real_choose(op, *a, **k))
    got = api.conv2d_grads(gy, X, W, bias=bias, grad_input=grad_input, grad_weight=grad_weight)
    wanted = (grad_input, grad_weight, bias)
    for g, expected, want in zip(got, fc.reference.conv2d_backward(gy, X, W), wanted):
        assert (g is None) == (not want)
        if want:
            assert rel_err(g, expected) <= 1e-5
    assert chosen == [op for op, want in (("conv2d.bwd_data", grad_input), ("conv2d.bwd_weight", grad_weight)) if want]


def test_repeated_calls_reuse_the_spec_but_never_skip_a_check():
    from fastconv import api

    y = fc.conv2d(X, W, stride=1, padding=(1, 1))
    sig = next(k for k in api._SPECS if k[:2] == ("conv", X.shape) and k[6:] == (1, (1, 1), 1, 1))
    assert api._SPECS[sig] == ConvSpec.from_args(X, W, None, 1, (1, 1))
    np.testing.assert_array_equal(fc.conv2d(X, W, stride=1, padding=(1, 1)), y)
    # arguments equal to a cached signature but of another type still go through the checks
    with pytest.raises(TypeError, match="stride=True must be an int"):
        fc.conv2d(X, W, stride=True, padding=(1, 1))
    with pytest.raises(TypeError, match="mixed dtypes"):
        fc.conv2d(X, W.astype(np.float64), stride=1, padding=(1, 1))
    with pytest.raises(ValueError, match="bias has shape"):
        fc.conv2d(X, W, np.zeros(3, np.float32), stride=1, padding=(1, 1))
    np.testing.assert_array_equal(fc.conv2d(X, W, stride=[1, 1], padding=[1, 1]), y)  # lists: the full path


def test_repeated_pool_calls_reuse_the_spec_but_never_skip_a_check():
    from fastconv import api

    y, idx = fc.max_pool2d(X, 2)
    key = ("pool", X.shape, X.dtype, 2, None, 0, 1, False, True)
    assert api._SPECS[key] == PoolSpec.from_args(X, 2)
    y_alone = fc.max_pool2d(X, 2, return_indices=False)  # another problem: no indices to compute
    assert api._SPECS[key[:-1] + (False,)] == PoolSpec.from_args(X, 2, indices=False)
    np.testing.assert_array_equal(y_alone, y)
    np.testing.assert_array_equal(fc.max_pool2d(X, 2)[0], y)
    with pytest.raises(ValueError, match="padding"):
        fc.max_pool2d(X, 2, padding=2)  # more than half the window
    with pytest.raises(TypeError):
        fc.max_pool2d(X.astype(np.int32), 2)  # same shape, another dtype: another signature
    gx = fc.max_pool2d_backward(np.ones_like(y), idx, X.shape)
    bkey = ("pool_bwd", y.shape, y.dtype, idx.shape, idx.dtype, X.shape)
    assert api._SPECS[bkey] == PoolBackwardSpec.from_args(np.ones_like(y), idx, X.shape)
    np.testing.assert_array_equal(fc.max_pool2d_backward(np.ones_like(y), idx, X.shape), gx)
    with pytest.raises(TypeError, match="int64"):
        fc.max_pool2d_backward(np.ones_like(y), idx.astype(np.int32), X.shape)
    with pytest.raises(ValueError, match="differ in"):
        fc.max_pool2d_backward(np.ones_like(y), idx, (X.shape[0], X.shape[1] + 1) + X.shape[2:])


def test_the_memo_stays_bounded_and_its_choices_right():
    """Every distinct shape added a Decision (~1 KB) to the memo, forever."""
    bound = getattr(dispatch, "_MEMO_MAX", 4096)
    dispatch.forget()
    specs = [ConvSpec.from_shapes((1, 3, 5, 5 + i), (4, 3, 3, 3)) for i in range(bound + 50)]
    sizes = []
    for spec in specs:
        dispatch.choose("conv2d.fwd", spec, caller="t")
        sizes.append((len(choosing._memo), len(choosing._decisions)))
    assert max(max(s) for s in sizes) <= bound
    # an evicted choice is decided again, a kept one is a hit: both the heuristic's (estimate mode)
    for spec in specs[:20] + specs[-20:]:
        expected = dispatch.heuristic("conv2d.fwd", spec, dispatch.eligible("conv2d.fwd", spec, caller="t")[0])
        assert dispatch.choose("conv2d.fwd", spec, caller="t") is expected
        assert fc.explain(spec.input_shape, spec.weight_shape).chosen == expected.name
    dispatch.forget()


def test_a_near_tie_goes_to_the_heuristics_pick_and_explain_says_so():
    """Medians within choosing.TIE of each other are a tie, which noise decides: the heuristic's
    order breaks it (at most TIE slower); further apart, the fastest median wins."""
    from fastconv.dispatch import choosing, plans

    spec = ConvSpec.from_args(np.zeros((1, 64, 56, 56), np.float32), np.zeros((64, 64, 3, 3), np.float32), padding=1)
    ks = [registry.kernel("conv2d.fwd", n) for n in ("c.winograd_f4k3", "numba.winograd_f4k3", "c.im2col")]
    assert choosing.heuristic("conv2d.fwd", spec, ks).name == "c.winograd_f4k3"

    def entry(numba_ms):
        times = {"c.winograd_f4k3": 1.0, "numba.winograd_f4k3": numba_ms, "c.im2col": 1.6}
        return {"op": "conv2d.fwd", "rigor": "measure", "failed": {},
                "times": {n: {"median": t * 1e-3, "dropped": False} for n, t in times.items()}}

    tie = 1 / (1 + choosing.TIE)
    assert choosing._pick(entry(1.01 * tie), ks, "measure", spec).name == "c.winograd_f4k3"
    assert choosing._pick(entry(0.99 * tie), ks, "measure", spec).name == "numba.winograd_f4k3"
    assert choosing._pick(entry(0.98), ks, "measure", spec).name == "c.winograd_f4k3"
    # explain names the tie when it decided
    cands = [plans.Candidate(k.name, entry(0.98)["times"][k.name]["median"], None, None, 1e-5, None) for k in ks]
    assert "numba.winograd_f4k3 timed 2% faster, within the 5% of a tie" in plans._tie_note("c.winograd_f4k3", cands)
    assert plans._tie_note("numba.winograd_f4k3", cands) == ""


def test_a_planned_call_is_conv2d_and_holds_until_the_dispatcher_forgets():
    from fastconv import api
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 6, 6), (5, 4, 3, 3), (5,)))
    plan = api.Conv2dPlan(x, w, b, 1, 1, activation="relu6")
    y = api.run_plan(plan, x, w, b)
    np.testing.assert_array_equal(y, fc.conv2d(x, w, b, 1, 1, activation="relu6"))  # the same kernel
    assert rel_err(y, np.clip(fc.reference.conv2d(x, w, b, 1, 1), 0, 6)) <= 1e-5
    hyper = (1, 1, 1, 1)  # stride, padding, dilation, groups
    assert plan.fits(x, w, b, hyper) and plan.fits(x + 1, w * 2, b, hyper)  # any arrays of the planned shapes
    f64 = [a.astype(np.float64) for a in (x, w, b)]
    assert not plan.fits(x[:1], w, b, hyper) and not plan.fits(x, w[:4], b, hyper) \
        and not plan.fits(*f64, hyper) and not plan.fits(x, w, None, hyper) and not plan.fits(x, w, b, (1, 2, 1, 1))
    assert plan.holds()
    dispatch.forget()
    assert not plan.holds()
    with pytest.raises(ValueError, match="groups"):  # the checks are conv2d's
        api.Conv2dPlan(x, w, b, groups=3)
    with pytest.raises(ValueError, match="activation"):
        api.Conv2dPlan(x, w, b, activation="gelu")
    empty = api.Conv2dPlan(x[:0], w, b, 1, 1)
    assert api.run_plan(empty, x[:0], w, b).shape == (0, 5, 6, 6)
