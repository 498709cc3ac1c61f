"""Every contender side by side on real layers: one benchmark group per layer and op.

    pytest benchmarks/ --benchmark-group-by=param:layer --benchmark-columns=median,iqr,rounds
    pytest benchmarks/ --full                                 # every layer of VGG-16 and ResNet-18
    pytest benchmarks/ -k "vgg16.conv3_2:" --benchmark-autosave   # later: --benchmark-compare

The `layer` parameter is "net.layer:op" (op: conv2d.fwd, conv2d.bwd_data, conv2d.bwd_weight,
maxpool2d.fwd, maxpool2d.bwd), and also the benchmark's group, so grouping by `param:layer` and
pytest-benchmark's default grouping (`group`) give the same tables.  The contenders of a layer
and op: every registered kernel that serves its shape (refusing kernels are not generated, so
nothing is skipped; the NumPy reference is the registry's last kernel), `auto` (what
`algo="auto"` runs; it tunes in the warm-up round and extra_info says what it chose and why), and
`torch` when torch is installed.  The GFLOP/s of the median lands in extra_info.

Every contender's output is checked against the reference's (within the kernel's registered
bound), so a run with --benchmark-disable (CI: each contender runs once) still tests something.
For strict side-by-side ratios (interleaved rounds, bwd/fwd) use `fastconv bench --pass bwd`.
"""
import functools
import importlib.util
import time

import numpy as np

import fastconv as fc
from fastconv import bench, dispatch, measure, nets

HAS_TORCH = importlib.util.find_spec("torch") is not None  # without importing it at collection

# --full: every layer of these nets, named "net.layer"
LAYERS = {f"{net}.{layer.name}": layer for net in ("vgg16", "resnet18") for layer in nets.get(net)}
# By default a few layers: big and small spatial sizes, a stride-2 conv, a 7x7, a 1x1 and a 3x3/2 pool.
QUICK = ("vgg16.conv1_1", "vgg16.conv2_2", "vgg16.conv3_2", "vgg16.conv5_1", "vgg16.pool1", "vgg16.pool3",
         "resnet18.conv1", "resnet18.pool1", "resnet18.conv3_1", "resnet18.conv4_x", "resnet18.conv5_ds")


def layer_ops(layer):
    """[(op, spec)] of a layer's forward and backward ops, from its shape alone (collection time)."""
    spec = layer.spec()
    return [(op, spec.backward_spec() if op == "maxpool2d.bwd" else spec)
            for p in ("fwd", "bwd") for op in bench.PASSES[p][layer.kind]]


def contenders(op, spec) -> list:
    """Those that serve spec: kernels that refuse it are not generated (a skip would be a defect)."""
    return [k.name for k in fc.kernels(op) if k.refusal(spec) is None] + ["auto"] + (["torch"] if HAS_TORCH else [])


def pytest_generate_tests(metafunc):
    if "contender" in metafunc.fixturenames:
        names = LAYERS if metafunc.config.getoption("--full", default=False) else QUICK
        # Plain strings: --benchmark-group-by=param:layer groups by str() of the value (not the test
        # id), and saved runs keep the values for --benchmark-compare.
        metafunc.parametrize("layer,contender", [(f"{name}:{op}", c) for name in names
                                                 for op, spec in layer_ops(LAYERS[name]) for c in contenders(op, spec)])


# Tests run layer by layer (the parametrization's order), so one layer's data is kept at a time.
@functools.lru_cache(maxsize=1)
def problems(name):
    return bench.problems(LAYERS[name].spec(), np.random.default_rng(0))


@functools.lru_cache(maxsize=1)
def expected(name, op):
    spec, args = problems(name)[op]
    return fc.kernels(op)[-1].run(spec, *args)


def auto(layer, op, spec):
    """The public call with algo="auto" (the default) for op, on bench.problems' arguments."""
    L = layer
    if op == "conv2d.fwd":
        return lambda x, w, b: fc.conv2d(x, w, b, L.stride, L.padding, L.dilation, L.groups)
    if op == "maxpool2d.fwd":
        return lambda x: fc.max_pool2d(x, L.kernel, L.stride, L.padding, L.dilation, L.ceil_mode)
    if op == "maxpool2d.bwd":
        return lambda grad_y, indices: fc.max_pool2d_backward(grad_y, indices, spec.input_shape)
    # conv2d_backward computes both gradients, each chosen on its own; so that its two ops can be
    # timed apart, run the dispatcher's choice for this one, looked up on every call as that call does.
    return lambda *args: dispatch.choose(op, spec, caller="benchmark").run(spec, *args)


def torch_op(layer, op, spec):
    """torch's own kernel for op, called as autograd would call it, on the same arguments as tensors."""
    import torch
    torch.set_num_threads(fc.get_num_threads())
    L, F = layer, torch.nn.functional
    if layer.kind == "conv":
        hyper = dict(stride=L.stride, padding=L.padding, dilation=L.dilation, groups=L.groups)
        # conv2d_input / conv2d_weight run aten's convolution_backward for that one gradient.
        return {"conv2d.fwd": lambda x, w, b: F.conv2d(x, w, b, **hyper),
                "conv2d.bwd_data": lambda grad_y, w: torch.nn.grad.conv2d_input(spec.input_shape, w, grad_y, **hyper),
                "conv2d.bwd_weight": lambda grad_y, x: torch.nn.grad.conv2d_weight(x, spec.weight_shape, grad_y, **hyper),
                }[op]
    hyper = (L.kernel, L.stride, L.padding, L.dilation, L.ceil_mode)
    if op == "maxpool2d.fwd":
        return lambda x: F.max_pool2d(x, *hyper, return_indices=True)
    # The kernel autograd runs for max_pool2d's backward, from (grad_y, indices) to grad_x as ours
    # does, minus autograd's bookkeeping.  Not max_unpool2d: it overwrites where overlapping windows
    # (ResNet's 3x3/2 pool) must add.  The input tensor only gives the shape and layout.
    x = torch.empty(spec.input_shape, dtype=getattr(torch, spec.dtype))
    return lambda grad_y, indices: torch.ops.aten.max_pool2d_with_indices_backward(grad_y, x, *hyper, indices)


def test_layer(benchmark, layer, contender):
    name, op = layer.rsplit(":", 1)
    spec, args = problems(name)[op]
    if contender == "auto":
        run = auto(LAYERS[name], op, spec)
    elif contender == "torch":
        import torch
        run, args = torch_op(LAYERS[name], op, spec), tuple(map(torch.from_numpy, args))
    else:
        run = functools.partial(next(k for k in fc.kernels(op) if k.name == contender).run, spec)
    benchmark.group = layer
    if not benchmark.disabled:
        time.sleep(bench.PAUSE_S)  # let the previous contender's thread pool stop spinning
    out = benchmark.pedantic(run, args=args, rounds=5, warmup_rounds=1)

    kernel = contender
    if contender == "auto":
        plan = dispatch.explain_spec(op, spec)  # the decision the call above made
        benchmark.extra_info.update(chose=plan.chosen, chosen_by=plan.source)
        kernel = plan.chosen
    # torch is held to the loosest bound registered for the op.
    rtol = max(k.rtol[spec.dtype] for k in fc.kernels(op) if kernel in (k.name, "torch"))
    out = tuple(map(np.asarray, out)) if isinstance(out, tuple) else np.asarray(out)  # torch: tensors
    want = expected(name, op)
    assert measure.rel_error(out, want) <= rtol, f"{kernel}: max error over {rtol:.0e} of max |reference|"
    if isinstance(want, tuple):  # max-pool forward: the argmax indices too
        assert np.array_equal(out[1], want[1]), f"{kernel}: indices differ from the reference's"
    # stats are None under --benchmark-disable (as CI runs it)
    if benchmark.stats and (work := measure.flops(op, spec)):
        benchmark.extra_info["gflops"] = work / benchmark.stats.stats.median / 1e9
