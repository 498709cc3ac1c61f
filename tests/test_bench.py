"""fastconv.bench as a library: the auto contender, torch's formulas, the totals, the progress
line.  Tiny layers only (LeNet-5), one round: these check the plumbing, not the speed."""
import io
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fastconv import bench, dispatch, nets, registry
from fastconv.c import _lib as c_lib


def _layers(*names, net="lenet5"):
    return [l for l in nets.get(net) if l.name in names]


def _run(layers, **kw):
    kw = {"repeats": 1, "measure_peak": False, "progress": False, **kw}
    rows, peak = bench.run(layers, **kw)
    assert peak is None
    return rows


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
def test_auto_row_names_the_dispatchers_choice(pass_):
    layers = _layers("conv2", "pool2")
    rows = _run(layers, pass_=pass_, with_reference=False)
    autos = [r for r in rows if r.kernel == bench.AUTO]
    assert [r.layer for r in autos] == ["conv2", "pool2"]
    for r, layer in zip(autos, layers):
        ops = bench.PASSES[pass_][layer.kind]
        assert list(r.chosen) == list(ops)
        spec = layer.spec()
        for op, name in r.chosen.items():
            assert name in {k.name for k in registry.kernels(op)}
            if op != "maxpool2d.bwd":  # its spec is PoolBackwardSpec, checked through the label below
                assert name == dispatch.choose(op, spec, caller="test").name
        assert r.label == f"auto ({' + '.join(dict.fromkeys(r.chosen.values()))})"
        # as accurate as the kernel it ran (its own bound, for the dtype)
        bound = max(next(k for k in registry.kernels(op) if k.name == n).rtol["float32"] for op, n in r.chosen.items())
        assert r.error <= bound
        assert (r.fwd_ms is not None) == (pass_ == "bwd")


def test_auto_only_when_asked_among_kernels():
    rows = _run(_layers("conv3"), kernel_names=("c.direct",), with_reference=False)
    assert [r.kernel for r in rows] == ["c.direct"]
    rows = _run(_layers("conv3"), kernel_names=("auto",))
    assert [r.kernel for r in rows] == ["auto", "numpy.reference"] and 0 < rows[0].vs_reference


def test_the_table_reports_only_its_own_runs_reroutes(monkeypatch):
    # calls that some earlier work in the process had rerouted (inf/NaN) are not this bench's
    from fastconv.common import nonfinite
    monkeypatch.setattr(nonfinite, "REROUTED", nonfinite.collections.Counter({"c.direct": 7}))
    rows = _run(_layers("conv3"), kernel_names=("c.direct",), with_reference=False)
    assert rows[0].rerouted == 0 and "rerouted" not in bench.format_table(rows, None)
    rows[0].rerouted = 2  # as a layer whose data held NaN would leave it
    assert bench.format_table(rows, None).endswith("inf/NaN guard rerouted calls to the backend's im2col: c.direct 2")


def _row(layer, kernel, ms, count, vs_ref=None, vs_torch=None, chosen=None):
    return bench.Row(layer, "", kernel, ms, None, vs_ref, 0.0, 1, vs_torch=vs_torch, chosen=chosen, count=count)


def test_totals_weight_each_layer_by_its_count():
    # two layers, counts 1 and 3; the best kernel is c.im2col on one and c.direct on the other,
    # the reference is faster still on "b" (it never counts as the best kernel)
    rows = [_row("a", "c.direct", 4.0, 1, 2.0, 0.5), _row("a", "c.im2col", 2.0, 1, 4.0, 1.0),
            _row("a", "auto", 3.0, 1, 8 / 3, 2 / 3, {"conv2d.fwd": "c.direct"}), _row("a", "torch", 2.0, 1, 4.0, 1.0),
            _row("a", "numpy.reference", 8.0, 1, 1.0, 0.25),
            _row("b", "c.direct", 1.0, 3, 16.0, 2.0), _row("b", "auto", 1.0, 3, 16.0, 2.0, {"conv2d.fwd": "c.direct"}),
            _row("b", "torch", 2.0, 3, 8.0, 1.0), _row("b", "numpy.reference", 0.5, 3, 1.0, 4.0)]
    t = bench.totals(rows)
    assert t["layers"] == 2 and t["occurrences"] == 4
    assert t["best"]["ms"] == pytest.approx(2.0 + 3 * 1.0)
    assert t["auto"]["ms"] == pytest.approx(3.0 + 3 * 1.0)
    assert t["torch"]["ms"] == pytest.approx(2.0 + 3 * 2.0)
    assert t["best"]["vs_reference"] == pytest.approx((4.0 * 16.0 ** 3) ** 0.25)
    assert t["best"]["vs_torch"] == pytest.approx((1.0 * 2.0 ** 3) ** 0.25)
    assert t["auto"]["vs_reference"] == pytest.approx((8 / 3 * 16.0 ** 3) ** 0.25)
    assert t["torch"]["vs_torch"] is None
    text = bench.format_totals(t)
    assert "2 layer shapes = 4 layers" in text and "auto" in text and "vs torch" in text
    # a contender or ratio some layer lacks gives no total and no mean, rather than a partial one
    t = bench.totals([r for r in rows if not (r.layer == "b" and r.kernel == "torch")])
    assert "torch" not in t and t["auto"]["vs_torch"] is not None
    rows[-4].vs_reference = None
    assert bench.totals(rows)["best"]["vs_reference"] is None


def test_totals_from_a_run_agree_with_the_rows():
    kernels = ("c.direct", "numba.direct", "c.maxpool")
    rows = _run(_layers("conv1", "pool1", "conv3"), kernel_names=kernels + ("auto",))
    t = bench.totals(rows)
    best = {}
    for r in rows:
        if r.kernel in kernels:
            best[r.layer] = min(best.get(r.layer, r), r, key=lambda x: x.ms)
    assert t["best"]["ms"] == pytest.approx(sum(r.ms for r in best.values()))
    geo = np.exp(np.mean(np.log([r.vs_reference for r in best.values()])))
    assert t["best"]["vs_reference"] == pytest.approx(geo)
    auto = [r for r in rows if r.kernel == "auto"]
    assert t["auto"]["ms"] == pytest.approx(sum(r.ms for r in auto)) and t["auto"]["vs_torch"] is None


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_one_line_on_a_terminal_and_lines_in_a_log():
    tty, log = _Terminal(), io.StringIO()
    for stream in (tty, log):
        _run(_layers("pool2", "conv3"), kernel_names=("c.direct", "c.maxpool"), with_reference=False,
             progress=stream)
    assert "\n" not in tty.getvalue().rstrip("\n") and "\r[" in tty.getvalue()
    assert "2/2 conv3 (" in tty.getvalue() and " s)" in tty.getvalue() and "done" in tty.getvalue()
    assert log.getvalue().splitlines() == ["[1/2] pool2 ...", "[2/2] conv3 ..."]


def test_importing_fastconv_imports_no_optional_library():
    code = ("import sys, fastconv, fastconv.bench, fastconv.cli; "
            "print([m for m in ('torch', 'matplotlib', 'onnx', 'onnxruntime') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
def test_torch_contender_matches_the_reference(pass_):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    rows = _run(_layers("conv2", "pool2"), pass_=pass_, with_torch=True, kernel_names=("auto",))
    mine = [r for r in rows if r.kernel == bench.TORCH]
    assert [r.layer for r in mine] == ["conv2", "pool2"]
    for r in mine:  # torch's own outputs, checked against the float64 reference like every contender
        assert r.error < 1e-5 and r.vs_torch == 1.0
    assert all(r.vs_torch is not None and r.vs_torch > 0 for r in rows)
    assert torch.get_num_threads() == threads  # restored after the run
    assert math.isfinite(bench.totals(rows)["auto"]["vs_torch"])


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
def test_onnxruntime_contender_matches_the_reference(pass_):
    """ONNX Runtime's CPU provider, one node per layer: forward only (it has no backward ops)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    rows = _run(_layers("conv2", "pool2"), pass_=pass_, compare=(bench.ORT,), kernel_names=("auto",))
    mine = [r for r in rows if r.kernel == bench.ORT]
    if pass_ == "bwd":
        assert not mine and all(r.vs_onnxruntime is None for r in rows)
        return
    assert [r.layer for r in mine] == ["conv2", "pool2"]
    for r in mine:  # its outputs, checked against the float64 reference like every contender's
        assert r.error < 1e-5 and r.vs_onnxruntime == 1.0
    assert all(r.vs_onnxruntime > 0 for r in rows)
    totals = bench.totals(rows)
    assert math.isfinite(totals["auto"]["vs_onnxruntime"]) and totals[bench.ORT]["vs_onnxruntime"] is None


def test_onnxruntime_has_no_double_kernel_so_it_sits_float64_out():
    pytest.importorskip("onnxruntime")
    rows = _run(_layers("conv2"), dtype="float64", compare=(bench.ORT,), kernel_names=("auto",))
    assert rows and not any(r.kernel == bench.ORT for r in rows)


def test_an_unknown_peer_is_refused():
    with pytest.raises(ValueError, match="tensorflow is not one of torch, onnxruntime"):
        bench.run(_layers("conv2"), compare=("tensorflow",), progress=False)


@pytest.mark.skipif(c_lib.lib is None, reason="C extension not built")
def test_the_profile_script_lays_out_every_conv_layer_and_kernel(tmp_path):
    """benchmarks/profile.py on LeNet-5: a row per conv layer and C kernel that serves it, phase
    shares that are percentages, and the per-layer best and the net total after them."""
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "profile.py"
    out = subprocess.run([sys.executable, str(script), "--net", "lenet5", "--seconds", "0.001",
                          "--kernels", "c.direct,c.im2col"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    convs = [layer.name for layer in nets.get("lenet5") if layer.kind == "conv"]
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] and line.split()[0] in convs]
    assert sorted((r[0], r[7]) for r in rows[:2 * len(convs)]) == sorted(
        (name, k) for name in convs for k in ("c.direct", "c.im2col"))
    assert all(0 <= int(c.rstrip("%")) <= 100 for r in rows for c in r if c.endswith("%"))
    assert "fastest C kernel per layer" in out.stdout and "net total" in out.stdout
    bad = subprocess.run([sys.executable, str(script), "--kernels", "numba.direct"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "profiled kernels: c.direct" in bad.stderr


def test_the_layer_class_script_sums_a_bench_json_by_class(tmp_path):
    """benchmarks/layer_classes.py on a LeNet-5 bench file: a line per class with each layer's
    time counted once per occurrence, and the ratio of torch's sum to auto's."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import layer_classes
    finally:
        sys.path.pop(0)
    layers = nets.get("lenet5")
    rows = [bench.Row(l.name, "", k, ms, None, None, 0.0, 1, count=l.count)
            for l, ms in zip(layers, (1.0, 2.0, 3.0, 4.0)) for k in ("auto", "c.im2col")]
    rows += [bench.Row(layers[0].name, "", "torch", 0.5, None, None, 0.0, 1, count=layers[0].count)]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"machine": "cpu (avx2), python 3", "net": "lenet5", "batch": 1, "pass": "fwd",
                                "rows": [{**r.__dict__, "label": r.label} for r in rows]}))
    out = layer_classes.summarize(str(path))
    first = next(line for line in out.splitlines() if "first layer" in line)  # conv1: 1 input channel
    assert "auto     1.00" in first and "torch/auto 0.50" in first
    assert "conv layers under 0.9x torch's speed: 1 of 1; slowest: conv1 0.50 (auto)" in out
    assert [layer_classes.layer_class(l) for l in layers[:2]] == ["first layer", "pool"]
