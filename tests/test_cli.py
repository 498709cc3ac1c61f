"""`fastconv` in-process: the bench, explain, tune and cache commands, and their one-line errors
(exit status 2)."""
import json

import pytest

from fastconv import bench, cli, registry, tuning_cache
from fastconv import nets as fastconv_nets


@pytest.fixture
def no_peak(monkeypatch):
    """Skip the ~1 s matmul peak measurement: these tests check the plumbing, not the speed."""
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda: None)


def _rows(out: str) -> list[str]:
    """The table's body: the lines after the dashed rule."""
    lines = out.splitlines()
    return lines[next(i for i, l in enumerate(lines) if set(l) == {"-"}) + 1:]


def test_bench_backward_rows(capsys, no_peak):
    assert cli.main(["bench", "--net", "resnet18", "--layers", "conv5_x", "--pass", "bwd", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "pass bwd" in out and "bwd/fwd" in out
    rows = _rows(out)
    assert rows and rows[0].startswith("conv5_x")
    # One row for every kernel name serving all three conv ops (the reference among them).
    served = set.intersection(*({k.name for k in registry.kernels(op)}
                                for op in ("conv2d.fwd", "conv2d.bwd_data", "conv2d.bwd_weight")))
    names = [word for row in rows for word in row.split() if word in {k.name for k in registry.kernels()}]
    assert sorted(names) == sorted(served)


def test_bench_pool_backward(capsys, no_peak):
    argv = ["bench", "--net", "resnet18", "--layers", "pool1", "--pass", "bwd", "--repeats", "1", "--no-reference"]
    assert cli.main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == len([k for k in registry.kernels("maxpool2d.bwd") if k.backend != "numpy"])


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
])
def test_bench_bad_arguments(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastconv: error: ") and message in err


# ----------------------------------------------------------------------------- explain, tune, cache

def _fake_measure(monkeypatch):
    """measure.run without timing: kernel i of the candidates 'takes' (i + 1) ms, the last one
    fastest, so the measured choice differs from registry order."""
    from fastconv import measure

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
