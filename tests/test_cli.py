"""`fastconv` in-process: the bench command's passes and its one-line errors (exit status 2)."""
import pytest

from fastconv import bench, cli, registry


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
