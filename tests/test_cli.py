"""`fastconv` in-process: the bench, nets, explain, tune and cache commands, and their one-line
errors (exit status 2)."""
import json
import math
import re
import subprocess
import sys

import pytest

from fastconv import bench, cli, registry
from fastconv.dispatch import tuning_cache
from fastconv import nets as fastconv_nets


@pytest.fixture
def no_peak(monkeypatch):
    """Skip the ~1 s matmul peak measurement: these tests check the plumbing, not the speed."""
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda: None)


def _rows(out: str) -> list[str]:
    """The table's body: the lines after the dashed rule, up to the blank line before the totals."""
    lines = out.splitlines()
    body = lines[next(i for i, l in enumerate(lines) if set(l) == {"-"}) + 1:]
    return body[:body.index("")] if "" in body else body


def test_bench_backward_rows(capsys, no_peak):
    assert cli.main(["bench", "--net", "resnet18", "--layers", "conv5_x", "--pass", "bwd", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "pass bwd" in out and "bwd/fwd" in out
    rows = _rows(out)
    assert rows and rows[0].startswith("conv5_x")
    # One row for every kernel name serving all three conv ops of the layer (the reference among
    # them; the depthwise kernels refuse it).
    spec = next(l for l in fastconv_nets.get("resnet18") if l.name == "conv5_x").spec()
    served = set.intersection(*({k.name for k in registry.kernels(op) if k.refusal(spec) is None}
                                for op in ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")))
    names = [word for row in rows for word in row.split() if word in {k.name for k in registry.kernels()}]
    assert sorted(names) == sorted(served)
    # and fastconv's own choice, naming its input-gradient and weight-gradient kernels (one if the same)
    auto = [row for row in rows if " auto (" in row]
    assert len(auto) == 1
    chosen = re.search(r"auto \((.*?)\)", auto[0]).group(1).split(" + ")
    assert chosen[0] in {k.name for k in registry.kernels("conv2d.bwd_data")}
    assert chosen[-1] in {k.name for k in registry.kernels("conv2d.bwd_weight")}


def test_bench_pool_backward(capsys, no_peak):
    argv = ["bench", "--net", "resnet18", "--layers", "pool1", "--pass", "bwd", "--repeats", "1", "--no-reference"]
    assert cli.main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == len([k for k in registry.kernels("maxpool2d.bwd") if k.backend != "numpy"]) + 1  # auto


def test_bench_backward_follows_the_registry(capsys, no_peak, monkeypatch):
    """A kernel registered for all three conv ops gets a row with no change to bench; one serving
    only the input gradient (as Winograd will) does not."""
    fake = [registry.Kernel("numba.fake", op, registry.kernels(op)[-1].run)  # the reference's run
            for op in ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")]
    half = registry.Kernel("numba.half", "conv2d.bwd_data", registry.kernels("conv2d.bwd_data")[-1].run)
    monkeypatch.setattr(registry, "KERNELS", (*fake, half) + registry.KERNELS)  # the reference stays last
    argv = ["bench", "--net", "resnet18", "--layers", "conv5_x", "--pass", "bwd", "--repeats", "1",
            "--no-reference", "--kernels", "numba.fake,numba.half"]
    assert cli.main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 1 and "numba.fake" in rows[0] and rows[0].endswith("0.0e+00")


@pytest.mark.parametrize("argv, message", [
    (["bench", "--pass", "sideways"], "--pass='sideways' must be one of fwd, bwd"),
    (["bench", "--net", "lenet9"], "unknown net 'lenet9'"),
    (["bench", "--net", "resnet18", "--layers", "conv9"], "--layers: conv9 not in resnet18"),
    (["bench", "--kernels", "c.auto"], "--kernels: c.auto not registered"),
    (["bench", "--compare", "tensorflow"], "--compare: tensorflow is not one of torch, onnxruntime"),
    (["bench", "--json", "/nonexistent/dir/out.json"], "/nonexistent/dir/out.json: no such directory"),
    (["nets", "vgg99"], "unknown net 'vgg99'"),
])
def test_bench_bad_arguments(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastconv: error: ") and message in err


def test_bench_auto_row_json_and_totals(capsys, no_peak, tmp_path):
    """The auto row names the kernel it ran; the totals printed are those of the JSON, which are
    the rows' sums and geometric means, every layer weighted by its count (conv5_x occurs 3 times)."""
    path = tmp_path / "bench.json"
    argv = ["bench", "--net", "resnet18", "--layers", "conv5_x,conv5_ds", "--repeats", "1",
            "--kernels", "c.im2col,numba.im2col,auto", "--json", str(path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    autos = [r for r in doc["rows"] if r["kernel"] == "auto"]
    assert len(autos) == 2
    for r in autos:
        assert r["chosen"]["conv2d.fwd"] in {k.name for k in registry.kernels("conv2d.fwd")}
        assert r["label"] == f"auto ({r['chosen']['conv2d.fwd']})" and r["label"] in out
    counts = {l.name: l.count for l in fastconv_nets.get("resnet18")}
    assert {r["layer"]: r["count"] for r in doc["rows"]} == {"conv5_x": 3, "conv5_ds": 1}
    best = {}
    for r in doc["rows"]:
        if r["kernel"] in ("c.im2col", "numba.im2col") and r["ms"] < best.get(r["layer"], {"ms": math.inf})["ms"]:
            best[r["layer"]] = r
    for what, picked in (("best", best.values()), ("auto", autos)):
        total = sum(counts[r["layer"]] * r["ms"] for r in picked)
        geo = math.exp(sum(counts[r["layer"]] * math.log(r["vs_reference"]) for r in picked) / 4)
        assert doc["totals"][what]["ms"] == pytest.approx(total)
        assert doc["totals"][what]["vs_reference"] == pytest.approx(geo)
        assert doc["totals"][what]["vs_torch"] is None and "torch" not in doc["totals"]
    assert "2 layer shapes = 4 layers" in out
    line, auto = next(l for l in out.splitlines() if l.startswith("  auto ")), doc["totals"]["auto"]
    assert line.split()[1] == f"{auto['ms']:.2f}" and f"{auto['vs_reference']:.2f}x" in line


def test_bench_compare_torch_and_onnxruntime(capsys, no_peak, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "bench.json"
    argv = ["bench", "--net", "lenet5", "--layers", "pool1,conv2", "--repeats", "1", "--compare",
            "torch,onnxruntime", "--json", str(path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "vs ort" in out and f"ONNX Runtime {ort.__version__}" in out and "not spinning" in out
    doc = json.loads(path.read_text())
    assert doc["onnxruntime"] == ort.__version__
    mine = {r["layer"]: r for r in doc["rows"] if r["kernel"] == "onnxruntime"}
    assert set(mine) == {"pool1", "conv2"}
    for r in doc["rows"]:  # ONNX Runtime's time / the row's, from the same rounds as torch's
        assert r["vs_onnxruntime"] == pytest.approx(mine[r["layer"]]["ms"] / r["ms"]) and r["vs_torch"] > 0
    assert doc["totals"]["onnxruntime"]["vs_torch"] > 0 and doc["totals"]["auto"]["vs_onnxruntime"] > 0
    assert "  onnxruntime " in out


def test_bench_compare_names_what_it_does_not_know(capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda *a, **kw: pytest.fail("timed before checking --compare"))
    assert cli.main(["bench", "--net", "lenet5", "--compare", "torch,tensorflow"]) == 2
    assert "--compare: tensorflow is not one of torch, onnxruntime" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert cli.main(["bench", "--net", "lenet5", "--compare", "onnxruntime"]) == 2
    assert 'pip install "fastconv[onnx]"' in capsys.readouterr().err


def test_bench_plot_writes_a_png(capsys, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda: 100.0)  # a peak, for its line on the chart
    path = tmp_path / "chart.png"
    argv = ["bench", "--net", "lenet5", "--layers", "conv1,pool1,conv3", "--repeats", "1", "--plot", str(path)]
    assert cli.main(argv) == 0
    assert f"chart: {path}" in capsys.readouterr().out
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_bench_plot_without_matplotlib(capsys, monkeypatch, tmp_path):
    """The missing extra is reported before any timing starts (which may take minutes)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setattr(bench, "run", lambda *a, **kw: pytest.fail("timed before checking the extra"))
    assert cli.main(["bench", "--net", "lenet5", "--plot", str(tmp_path / "chart.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "fastconv[plot]"' in err and not (tmp_path / "chart.png").exists()


def test_bench_compare_torch(capsys, no_peak, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "bench.json"
    argv = ["bench", "--net", "lenet5", "--layers", "pool1,conv2", "--repeats", "1", "--compare", "torch",
            "--json", str(path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "vs torch" in out and f"torch {torch.__version__}" in out
    doc = json.loads(path.read_text())
    assert doc["torch"] == torch.__version__
    mine = {r["layer"]: r for r in doc["rows"] if r["kernel"] == "torch"}
    assert set(mine) == {"pool1", "conv2"}
    for r in doc["rows"]:  # torch's time / the row's, from the same rounds
        assert r["vs_torch"] == pytest.approx(mine[r["layer"]]["ms"] / r["ms"])
    assert doc["totals"]["torch"]["ms"] == pytest.approx(sum(r["ms"] for r in mine.values()))
    assert doc["totals"]["auto"]["vs_torch"] > 0 and doc["totals"]["best"]["vs_torch"] > 0
    assert "  torch " in out


def test_bench_compare_torch_without_torch(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.setattr(bench, "run", lambda *a, **kw: pytest.fail("timed before checking for torch"))
    assert cli.main(["bench", "--net", "lenet5", "--compare", "torch"]) == 2
    err = capsys.readouterr().err
    assert err == "fastconv: error: --compare torch needs torch: pip install torch\n"


# ----------------------------------------------------------------------------- nets

def test_nets_lists_every_net_with_its_totals(capsys):
    assert cli.main(["nets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = lines[lines.index(next(l for l in lines if set(l) == {"-"})) + 1:]
    assert [l.split()[0] for l in body] == list(fastconv_nets.NETS)
    # VGG-16 by hand (tests/test_nets.py derives these): 14 distinct shapes, 13 convs + 5 pools,
    # 15,228,416 activations with the input and 9,192 of the fully connected layers (61.0 MB in
    # float32), 14,710,464 conv and 123,633,664 fc weights, 138,357,544 parameters with the biases,
    # 2 * (15,346,630,656 + 123,633,664) FLOPs
    vgg = next(l for l in body if l.startswith("vgg16 ")).split()
    assert vgg == ["vgg16", "14", "18", "15,237,608", "61.0", "138,344,128", "138,357,544",
                   f"{2 * (15_346_630_656 + 123_633_664):,}"]
    assert cli.main(["nets", "--json"]) == 0
    doc = {d["net"]: d for d in json.loads(capsys.readouterr().out)}
    assert doc["vgg16"]["flops"] == 2 * (15_346_630_656 + 123_633_664) and doc["resnet18"]["layers"] == 21
    assert doc["resnet18"]["params"] == 11_689_512


def test_nets_table(capsys):
    assert cli.main(["nets", "VGG-16", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert out == fastconv_nets.format_table("VGG-16", "float64") + "\n"
    total = next(l for l in out.splitlines() if l.startswith("total"))
    assert total.split()[-6:] == ["150.5K)", "15.2M", "121.9MB", "138.3M", "138.4M", "30.9G"]  # 8 bytes per value
    assert cli.main(["nets", "lenet5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["layer"]["name"] for r in doc["rows"]] == [l.name for l in fastconv_nets.get("lenet5")] + ["fc4", "fc5"]
    assert doc["totals"]["weights"] == 6 * 25 + 16 * 6 * 25 + 120 * 16 * 25 + 120 * 84 + 84 * 10
    assert doc["totals"]["params"] == 61_706  # LeNet-5's classic count: every bias too


# ----------------------------------------------------------------------------- explain, tune, cache

def _fake_measure(monkeypatch):
    """measure.run without timing: kernel i of the candidates 'takes' (i + 1) ms, the last one
    fastest, so the measured choice differs from registry order."""
    from fastconv.dispatch import measure

    def run(op, spec, contenders, reference, **kw):
        n = len(contenders)
        res = measure.Result(cost_s=0.01, budget_s=1.0)
        for i, k in enumerate(contenders):
            t = (n - i) * 1e-3
            res.times[k.name] = {"median": t, "q1": t, "q3": t, "min": t, "max": t, "runs": 3, "dropped": False}
            res.errors[k.name] = 0.0
        return res
    monkeypatch.setattr(measure, "run", run)


def test_explain_table_and_json(capsys):
    assert cli.main(["explain", "--input", "1,3,9,9", "--weight", "4,3,3,3", "--stride", "2", "--padding", "1",
                     "--repro"]) == 0
    out = capsys.readouterr().out
    assert "chosen:" in out and "median ms" in out and "not candidates:" in out and "fc.conv2d(" in out
    assert cli.main(["explain", "--input", "1,3,9,9", "--weight", "4,3,3,3", "--op", "conv2d.bwd_weight",
                     "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["op"] == "conv2d.bwd_weight" and plan["spec"]["c_in"] == 3 and plan["candidates"]


def test_tune_and_cache_commands(capsys, monkeypatch, measuring, tmp_path):
    _fake_measure(monkeypatch)
    assert cli.main(["tune", "--net", "resnet18", "--pass", "all"]) == 0
    out = capsys.readouterr().out
    assert "problems in" in out and "cache:" in out and "conv5_x" in out
    assert cli.main(["tune", "--net", "resnet18", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {p["source"] for p in doc["plans"]} == {"cache"} and doc["summary"]["problems"] == 12
    assert cli.main(["tune", "--net", "lenet5", "--verify", "--json"]) == 0  # re-timed: the same winners
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["verified"] == summary["choice_within_10pct"] == summary["choice_within_10pct_by_min"] > 0

    assert cli.main(["cache", "path"]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith(".json") and path.startswith(str(measuring))
    assert cli.main(["cache", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    lenet = len(fastconv_nets.get("lenet5"))
    assert shown["path"] == path and len(shown["entries"]) == 12 + 11 * 2 + 1 + lenet  # resnet18 fwd, bwd; lenet5
    assert cli.main(["cache", "show"]) == 0
    assert "conv2d.bwd_weight" in capsys.readouterr().out
    shipped = str(tmp_path / "tuned.json")
    assert cli.main(["cache", "export", shipped]) == 0
    assert cli.main(["cache", "clear"]) == 0
    assert "removed 1 tuning file" in capsys.readouterr().out and not tuning_cache.files()
    assert cli.main(["cache", "import", shipped]) == 0
    assert f"imported {35 + lenet} entries" in capsys.readouterr().out
    doc = json.load(open(shipped))
    doc["environment"]["threads"] = 99
    json.dump(doc, open(shipped, "w"))
    assert cli.main(["cache", "import", shipped]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs in: threads" in err and "--force" in err
    assert cli.main(["cache", "import", shipped, "--force"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["explain", "--weight", "4,3,3,3"], "the following arguments are required: --input"),
    (["explain", "--input", "1,3,9", "--weight", "4,3,3,3"], "--input='1,3,9' must have 4 values, got 3"),
    (["explain", "--input", "1,3,9,9", "--weight", "4,3,x,3"], "--weight='4,3,x,3' must be comma-separated integers"),
    (["explain", "--input", "1,3,9,9", "--weight", "4,2,3,3"], "expects 2 input channels"),
    (["explain", "--input", "1,3,9,9", "--weight", "4,3,3,3", "--op", "conv3d"], "argument --op: invalid choice"),
    (["explain", "--input", "1,3,9,9", "--weight", "4,3,3,3", "--algo", "fft"], "algo='fft'"),
    (["tune", "--net", "lenet9"], "unknown net 'lenet9'"),
    (["tune", "--net", "vgg16", "--budget", "-1"], "budget_s=-1.0 must be a positive number"),
    (["tune", "--net", "vgg16", "--pass", "sideways"], "--pass='sideways' must be one of fwd, bwd, all"),
    (["cache", "polish"], "argument action: invalid choice: 'polish'"),
    (["cache", "export"], "cache export needs a FILE"),
    (["cache", "import", "/nonexistent/tuned.json"], "No such file or directory: /nonexistent/tuned.json"),
])
def test_explain_tune_cache_bad_arguments(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastconv: error: ") and message in err


@pytest.mark.parametrize("argv, message", [
    (["bench", "--net", "lenet5", "--layers", ","], "--layers=',' names no layer"),
    (["bench", "--net", "lenet5", "--layers", ""], "--layers='' names no layer"),
    (["bench", "--net", "lenet5", "--kernels", ","], "--kernels=',' names no kernel"),
    (["bench", "--net", "lenet5", "--kernels", "auto,,numba.nope"], "--kernels: numba.nope not registered"),
    (["bench", "--net", "lenet5", "--batch", "0"], "argument --batch: '0' is out of range"),
    (["bench", "--net", "lenet5", "--repeats", "x"], "argument --repeats: 'x' is not an integer"),
    (["tune", "--net", ",,,"], "--net=',,,' names no network"),
    (["tune", "--net", "lenet5,lenet9"], "--net: unknown net 'lenet9'"),
    (["tune", "--net", "lenet5", "--batch", "99999999999999999999999"],
     "argument --batch: '99999999999999999999999' is out of range"),
    (["explain", "--input", "99999999999999999999999,1,5,5", "--weight", "1,1,3,3"],
     "--input='99999999999999999999999,1,5,5': 99999999999999999999999 is out of range"),
    (["explain", "--input", "1,1,5,5", "--weight", "1,1,-3,3"], "--weight='1,1,-3,3': -3 is out of range"),
    (["explain", "--input", "1,1,5,5", "--weight", "1,1,3,3", "--stride", "99999999999999999999999"],
     "--stride='99999999999999999999999': 99999999999999999999999 is out of range"),
    (["explain", "--input", "1,1,5,5", "--weight", "1,1,3,3", "--padding", "1,-1"], "--padding='1,-1': -1 is out"),
    (["explain", "--input", "1,1,5,5", "--weight", "1,1,3,3", "--dilation", "0"], "--dilation='0': 0 is out"),
    (["explain", "--input", "1,1,5,5", "--weight", "1,1,3,3", "--groups", "99999999999999999999999"],
     "argument --groups: '99999999999999999999999' is out of range"),
    (["cache", "export", "/nonexistent/dir/x.json"],
     "cannot write /nonexistent/dir/x.json: directory /nonexistent/dir does not exist"),
])
def test_every_list_and_number_option_is_checked_and_named(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastconv: error: ") and message in err
    assert ".tmp-" not in err


def test_export_names_the_file_it_cannot_write(capsys, measuring, tmp_path):
    target = tmp_path / "is-a-directory"
    target.mkdir()
    assert cli.main(["cache", "export", str(target)]) == 2  # past the directory checks: the OSError
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and ".tmp-" not in err


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    """`fastconv kernels | head -1`: the pipe closes before fastconv writes; no error, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "fastconv.cli", "kernels"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()  # before the import is done, so every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err


def test_only_fastconv_argument_errors_exit_2(capsys, monkeypatch):
    def failing(exc):
        def command(args):
            raise exc
        monkeypatch.setattr(cli, "_kernels", command)

    failing(ValueError("tune: batch=0 must be a positive int"))  # fastconv's own check: one line
    assert cli.main(["kernels"]) == 2
    assert capsys.readouterr().err == "fastconv: error: tune: batch=0 must be a positive int\n"
    for bug in (TypeError("'NoneType' object is not subscriptable"), ValueError("math domain error"),
                KeyError("q1")):
        failing(bug)
        with pytest.raises(type(bug)):  # a bug keeps its traceback
            cli.main(["kernels"])


# ----------------------------------------------------------------------------- bench --model

@pytest.mark.parametrize("train", [False, True], ids=["inference", "train"])
def test_bench_model_times_a_whole_torch_model_and_says_where_its_time_goes(capsys, monkeypatch, tmp_path, train):
    pytest.importorskip("torch")
    if not train:
        pytest.importorskip("onnxruntime")
    from fastconv import torch_models
    monkeypatch.setitem(torch_models.INPUT_SIZE, "resnet18", (3, 64, 64))  # the plumbing, not the speed
    path = tmp_path / "model.json"
    argv = ["bench", "--model", "resnet18", "--repeats", "2", "--json", str(path),
            "--compare", "torch" if train else "torch,onnxruntime"] + (["--train"] if train else [])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    contenders = {"torch", "fastconv"} | (set() if train else {"onnxruntime"})
    assert set(doc["medians"]) == contenders and all(len(v) == 2 for v in doc["times"].values())
    assert ("training step" if train else "inference") in out
    assert ("fastconv (patch)" if train else "fastconv (optimize)") in out
    # every conv and the stem's max-pool is one fastconv call (forward; and backward when training)
    calls = {}
    for layer in doc["layers"]:
        fn = layer["call"].split()[0]
        calls[fn] = calls.get(fn, 0) + layer["calls"]
        for kernel in layer["kernels"].split(" + "):  # "-": a gradient nobody wants, not computed
            assert kernel in {k.name for k in registry.kernels()} or (kernel == "-" and fn == "conv2d_backward")
    expected = {"conv2d": 20, "max_pool2d": 1}
    if train:
        expected.update({"conv2d_backward": 20, "max_pool2d_backward": 1})
        # only the stem's input (the images: 3 channels) needs no gradient, and its weights do
        skipped = [layer for layer in doc["layers"] if "-" in layer["kernels"].split(" + ")]
        assert [(layer["call"].split()[3].split("x")[1], layer["kernels"].split(" + ")[0]) for layer in skipped] \
            == [("3", "-")]
    assert calls == expected and doc["fastconv_calls"] == sum(expected.values())
    assert doc["fastconv_ms"] == pytest.approx(sum(layer["ms"] for layer in doc["layers"]))
    assert 0 < doc["fastconv_ms"] <= doc["instrumented_ms"] and doc["adapter_us_per_call"] >= 0 \
        and doc["outside_kernel_us_per_call"] >= 0 and doc["instrumentation_us_per_call"] >= 0
    assert "us per layer call" in out


@pytest.mark.parametrize("argv, message", [
    (["bench", "--model", "alexnet9"], "--model: 'alexnet9' is not one of resnet18"),
    (["bench", "--model", "resnet18", "--layers", "conv1"], "--layers apply to --net only"),
    (["bench", "--model", "resnet18", "--pass", "bwd"], "--pass apply to --net only"),
    (["bench", "--train"], "--train applies to --model"),
    (["bench", "--model", "resnet18", "--train", "--compare", "onnxruntime"], "ONNX Runtime runs inference only"),
])
def test_bench_torch_model_bad_arguments(capsys, argv, message):
    pytest.importorskip("torch")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
