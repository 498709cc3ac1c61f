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
from fastconv import bench, dispatch, nets, registry, timing
from fastconv.reference import rel_error

HAS_TORCH = importlib.util.find_spec("torch") is not None  # without importing it at collection

# --full: every layer of these nets, named "net.layer"
LAYERS = {f"{net}.{layer.name}": layer for net in ("vgg16", "resnet18") for layer in nets.get(net)}
# By default a few layers: big and small spatial sizes, a stride-2 conv, a 7x7, a 1x1 and a 3x3/2 pool.
QUICK = ("vgg16.conv1_1", "vgg16.conv2_2", "vgg16.conv3_2", "vgg16.conv5_1", "vgg16.pool1", "vgg16.pool3",
         "resnet18.conv1", "resnet18.pool1", "resnet18.conv3_1", "resnet18.conv4_x", "resnet18.conv5_ds")


def layer_ops(layer):
    """[(op, spec)] of a layer's forward and backward ops, from its shape alone (collection time)."""
    spec = layer.spec()
    return [(op, registry.OPS[op].spec_of(spec)) for p in ("fwd", "bwd") for op in registry.PASSES[p][layer.kind]]


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
    """What algo="auto" (the default) runs for op, on bench.problems' arguments: the op's public
    function (registry.Op), except where that function serves several ops (conv2d_backward computes
    both gradients, each chosen on its own): so that its ops can be timed apart, the dispatcher's
    choice for this one, looked up on every call as that call does."""
    record = registry.OPS[op]
    if record.output is None:
        fn = getattr(fc, record.public)
        kwargs = record.hyper(spec)
        return lambda *args: fn(*args, **kwargs)
    return lambda *args: dispatch.choose(op, spec, caller="benchmark").run(spec, *args)


def torch_op(layer, op, spec):
    """torch's own kernel for op (registry.Op.torch: called as autograd would call it), on the same
    arguments as tensors."""
    import torch
    torch.set_num_threads(fc.get_num_threads())
    record = registry.OPS[op]
    layer_spec = layer.spec()  # the pool backward's call needs the forward's window
    calls = {}  # built once per argument tensors (the same every round), so no round pays for it

    def run(*tensors):
        key = tuple(map(id, tensors))
        if key not in calls:
            calls[key] = record.torch(layer_spec, dict(zip(record.args, tensors)))
        return calls[key]()
    return run


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
        time.sleep(timing.PAUSE_S)  # let the previous contender's thread pool stop spinning
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
    assert rel_error(out, want) <= rtol, f"{kernel}: max error over {rtol:.0e} of max |reference|"
    if isinstance(want, tuple):  # max-pool forward: the argmax indices too
        assert np.array_equal(out[1], want[1]), f"{kernel}: indices differ from the reference's"
    # stats are None under --benchmark-disable (as CI runs it)
    if benchmark.stats and (work := registry.OPS[op].flops(spec)):
        benchmark.extra_info["gflops"] = work / benchmark.stats.stats.median / 1e9
