"""Every registered kernel side by side on real layers, one benchmark group per op and layer.

    pytest benchmarks/ --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
    pytest benchmarks/ --full                     # every layer of VGG-16 and ResNet-18

Forward and both backward ops (input gradient, weight gradient) of conv2d, forward and backward of
max-pool, for every kernel the registry lists for the op.  Ineligible kernels are skipped with their
refusal (asv's NotImplementedError); the GFLOP/s of the median lands in extra_info.  For strict
side-by-side ratios (interleaved rounds, bwd/fwd) use `fastconv bench --pass bwd`.
"""
import time

import numpy as np
import pytest

import fastconv as fc
from fastconv import bench, nets

# A few layers of each net by default: big and small spatial sizes, a stride-2 conv, a 7x7 and a 1x1.
QUICK = {"vgg16": {"conv1_1", "conv2_2", "conv3_2", "conv5_1", "pool1", "pool3"},
         "resnet18": {"conv1", "pool1", "conv3_1", "conv4_x", "conv5_ds"}}
OPS = {"test_conv_forward": "conv2d.fwd", "test_conv_backward_data": "conv2d.bwd_data",
       "test_conv_backward_weight": "conv2d.bwd_weight",
       "test_pool_forward": "maxpool2d.fwd", "test_pool_backward": "maxpool2d.bwd"}


def pytest_generate_tests(metafunc):
    if "layer" in metafunc.fixturenames:
        full = metafunc.config.getoption("--full", default=False)
        op = OPS[metafunc.function.__name__]
        kind = "conv" if op.startswith("conv2d") else "pool"
        params = [pytest.param(net, layer, k, id=f"{net}.{layer.name}-{k.name}")
                  for net in QUICK for layer in nets.get(net) if layer.kind == kind
                  and (full or layer.name in QUICK[net]) for k in fc.kernels(op)]
        metafunc.parametrize("net,layer,kernel", params)


def _bench(benchmark, op, net, layer, kernel):
    spec, args = bench.problems(layer.spec(batch=1), np.random.default_rng(0))[op]
    if (reason := kernel.refusal(spec)) is not None:
        pytest.skip(reason)
    benchmark.group = f"{op}:{net}.{layer.name}"
    time.sleep(bench.PAUSE_S)  # let the previous contender's thread pool stop spinning
    benchmark.pedantic(kernel.run, args=(spec, *args), rounds=5, warmup_rounds=1)
    # stats are None under --benchmark-disable (as CI runs it).  Each conv op (forward, input
    # gradient, weight gradient) does the forward's multiply-adds.
    if benchmark.stats and op.startswith("conv2d"):
        benchmark.extra_info["gflops"] = spec.flops / benchmark.stats.stats.median / 1e9


def test_conv_forward(benchmark, net, layer, kernel):
    _bench(benchmark, "conv2d.fwd", net, layer, kernel)


def test_conv_backward_data(benchmark, net, layer, kernel):
    _bench(benchmark, "conv2d.bwd_data", net, layer, kernel)


def test_conv_backward_weight(benchmark, net, layer, kernel):
    _bench(benchmark, "conv2d.bwd_weight", net, layer, kernel)


def test_pool_forward(benchmark, net, layer, kernel):
    _bench(benchmark, "maxpool2d.fwd", net, layer, kernel)


def test_pool_backward(benchmark, net, layer, kernel):
    _bench(benchmark, "maxpool2d.bwd", net, layer, kernel)
