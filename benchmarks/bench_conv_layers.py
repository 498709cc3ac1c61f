"""Every registered kernel side by side on real layers, one benchmark group per layer.

    pytest benchmarks/ --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

Ineligible kernels are skipped with their refusal (asv's NotImplementedError); the GFLOP/s of the
median lands in extra_info.  Rounds are interleaved by pytest-benchmark's own calibration; for
strict side-by-side ratios use `fastconv bench`.
"""
import time

import numpy as np
import pytest

import fastconv as fc
from fastconv import nets

QUICK = {"conv1_1", "conv2_2", "conv3_2", "conv5_1", "pool1", "pool3"}


def _layers(config):
    full = config.getoption("--full", default=False)
    return [l for l in nets.get("vgg16") if full or l.name in QUICK]


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        layers = _layers(metafunc.config)
        op = "conv2d.fwd" if metafunc.function.__name__.startswith("test_conv") else "maxpool2d.fwd"
        kind = "conv" if op == "conv2d.fwd" else "pool"
        params = [pytest.param(l, k, id=f"vgg16.{l.name}-{k.name}") for l in layers if l.kind == kind
                  for k in fc.kernels(op)]
        metafunc.parametrize("layer,kernel", params)


def _pedantic(benchmark, fn):
    time.sleep(0.1)  # let the previous contender's thread pool stop spinning
    return benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


def test_conv_forward(benchmark, layer, kernel):
    spec = layer.spec(batch=1)
    if (reason := kernel.refusal(spec)) is not None:
        pytest.skip(reason)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.input_shape).astype(np.float32)
    w = rng.standard_normal(spec.weight_shape).astype(np.float32)
    benchmark.group = f"conv2d:vgg16.{layer.name}"
    _pedantic(benchmark, lambda: kernel.run(spec, x, w, None))
    if benchmark.stats:  # None under --benchmark-disable (CI runs the suite that way)
        benchmark.extra_info["gflops"] = spec.flops / benchmark.stats.stats.median / 1e9


def test_pool_forward(benchmark, layer, kernel):
    spec = layer.spec(batch=1)
    x = np.random.default_rng(0).standard_normal(spec.input_shape).astype(np.float32)
    benchmark.group = f"maxpool2d:vgg16.{layer.name}"
    _pedantic(benchmark, lambda: kernel.run(spec, x))
