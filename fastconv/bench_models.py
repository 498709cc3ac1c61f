"""``fastconv bench --model NAME``: a whole network end to end, native torch against fastconv.torch.

Inference (the default): the native model in eval mode under ``torch.no_grad()`` against
``fastconv.torch.optimize`` of a copy (BatchNorm folded, activations fused, the rest patched), and
ONNX Runtime's CPU provider on the model exported by ``torch.onnx.export`` when asked.
``--train``: one training step (forward, cross-entropy, backward, SGD step) of the native model
against a patched copy.  Contenders are timed interleaved (fastconv.timing.interleaved: a pause
before each, so no thread pool spins into the next one's time), medians of the rounds.

Then one more call of fastconv's contender with the public functions instrumented says where its
time goes: per layer shape, the fastconv call (kernel + dispatch) and its kernel; the rest of the
model's time (torch's remaining ops, Python, the adapter); and the adapter's own cost per layer call,
measured on a tiny layer (FusedConv2d or a patched Conv2d against fastconv.conv2d on the same arrays).
"""
from __future__ import annotations

import contextlib
import copy
import io
import statistics
import time
import timeit
from collections import defaultdict

import numpy as np

import fastconv
from . import api, dispatch, timing
from .bench import machine_line
from .spec import activation_arg, conv_hyper

TORCH, FASTCONV, ORT = "torch", "fastconv", "onnxruntime"
# the adapter's entry points; its backward calls api.conv2d_grads, shown as conv2d_backward, and its
# fused layers api.run_plan (a planned conv2d), shown as conv2d
_INSTRUMENTED = ("conv2d", "conv2d_grads", "max_pool2d", "max_pool2d_backward", "run_plan")
_SHOWN = {"conv2d_grads": "conv2d_backward", "run_plan": "conv2d"}


def _model_and_input(name: str, batch: int):
    import torch

    from .torch_models import INPUT_SIZE, MODELS
    torch.manual_seed(0)
    model = MODELS[name]()
    x = torch.randn(batch, *INPUT_SIZE[name], generator=torch.Generator().manual_seed(1))
    return model, x


def contenders(name: str, batch: int, train: bool, compare: tuple, progress=print) -> dict:
    """{contender: a call running the model once}; fastconv's first call (its tuning) is made here."""
    import torch
    import torch.nn.functional as F

    import fastconv.torch as fct
    native, x = _model_and_input(name, batch)
    calls = {}
    if train:
        target = torch.arange(batch) % 1000
        fast = fct.patch(copy.deepcopy(native))

        def step_of(model):
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)
            model.train()

            def step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), target).backward()
                opt.step()
            return step
        calls[TORCH], calls[FASTCONV] = step_of(native), step_of(fast)
    else:
        native.eval()
        fast = fct.optimize(copy.deepcopy(native))

        def infer_of(model):
            def infer():
                with torch.no_grad():
                    return model(x)
            return infer
        calls[TORCH], calls[FASTCONV] = infer_of(native), infer_of(fast)
        if ORT in compare:
            calls[ORT] = _onnxruntime_call(native, x)
    progress(f"{name}: first call of each contender (fastconv tunes each new layer shape once; the cache keeps it)")
    for label, call in calls.items():
        t0 = time.perf_counter()
        call()
        progress(f"  {label}: {time.perf_counter() - t0:.2f} s")
    return calls


def _onnxruntime_call(model, x):
    import onnxruntime as ort
    import torch

    from .peers import onnxruntime_options
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17, input_names=["x"])
    session = ort.InferenceSession(f.getvalue(), onnxruntime_options(fastconv.get_num_threads()),
                                   providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def _wrap(fn, inner, spent):
    """inner, its calls' times added to spent[(function, shapes, hyper-parameters)]."""
    plans = {}  # run_plan: each plan's key, made once (the plan's hyper-parameters, as conv2d's)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        dt = time.perf_counter() - t0
        key = plans.get(args[0]) if fn == "run_plan" else None
        if key is None:
            hyper = tuple(a for a in args if a is not None and not isinstance(a, np.ndarray))
            if fn == "run_plan":
                hyper = tuple(conv_hyper(args[0].spec).values())
            key = (_SHOWN.get(fn, fn), tuple(a.shape for a in args if isinstance(a, np.ndarray)), hyper)
            if fn == "run_plan":
                plans[args[0]] = key
        entry = spent[key]
        entry[0] += dt
        entry[1] += 1
        if not entry[2]:
            entry[2] = _kernels_of(fn, args, kwargs)
        return out
    return timed


@contextlib.contextmanager
def instrumented():
    """fastconv's public functions timed per (function, shapes): {key: [seconds, calls, kernels]}."""
    spent = defaultdict(lambda: [0.0, 0, ""])
    saved = {fn: getattr(_home(fn), fn) for fn in _INSTRUMENTED}
    for fn, inner in saved.items():
        setattr(_home(fn), fn, _wrap(fn, inner, spent))
    try:
        yield spent
    finally:
        for fn, inner in saved.items():
            setattr(_home(fn), fn, inner)


def instrumentation_us() -> float:
    """Microseconds the instrumentation adds to a call outside the time it records (a conv2d call's
    key and bookkeeping), best of 5 x 2000 calls of a function doing nothing, wrapped and bare."""
    x = np.zeros((1, 1, 1, 1), np.float32)

    def nothing(*args, **kwargs):
        return None
    wrapped = _wrap("conv2d", nothing, defaultdict(lambda: [0.0, 0, "-"]))
    args = (x, x, None, (1, 1), (0, 0), (1, 1), 1)
    best = [min(timeit.repeat(lambda: f(*args), number=2000, repeat=5)) / 2000 for f in (wrapped, nothing)]
    return max(0.0, best[0] - best[1]) * 1e6


def _home(fn):
    """The module whose attribute the adapter looks up at each call."""
    return api if fn in ("conv2d_grads", "run_plan") else fastconv


def _kernels_of(fn, args, kwargs) -> str:
    """The kernel(s) auto ran for this call (the dispatcher's memo answers)."""
    try:
        if fn == "run_plan":
            return args[0].kernel.name
        if fn == "conv2d":
            spec = api._conv_spec(*args[:3], *args[3:7], "conv2d")
            act = activation_arg("bench", kwargs.get("activation"))
            return dispatch.choose("conv2d.fwd", spec, caller="bench", act=act).name
        if fn == "conv2d_grads":
            spec = api._conv_spec(args[1], args[2], None, *args[3:7], "conv2d_backward")
            wanted = (("conv2d.bwd_data", kwargs.get("grad_input", True)),
                      ("conv2d.bwd_weight", kwargs.get("grad_weight", True)))
            return " + ".join(dispatch.choose(op, spec, caller="bench").name if want else "-"
                              for op, want in wanted)
        if fn == "max_pool2d":
            spec = api._pool_spec(*args[:6], kwargs.get("return_indices", True))
            return dispatch.choose("maxpool2d.fwd", spec, caller="bench").name
        spec = api._pool_backward_spec(*args[:3])
        return dispatch.choose("maxpool2d.bwd", spec, caller="bench").name
    except Exception:  # noqa: BLE001 - a label only
        return "?"


def adapter_overhead_us(train: bool) -> dict:
    """Microseconds per layer call around the kernel, on a 1x4x4x4 input (a 1x1 conv, whose kernel
    time is tiny), best of 5 x 2000 calls each: {"adapter": the module's call minus fastconv's call
    that the module makes (a planned call, api.run_plan, for inference; fastconv.conv2d for
    training) on the same arrays, "outside_kernel": the module's call minus the kernel's own (the
    dispatch's checks and choice included)}.  Inference: an optimized conv + BN + ReLU (FusedConv2d)
    under no_grad, entered once around the timing as a model's call enters it once for all its
    layers; training: a patched Conv2d's forward with autograd recording."""
    import torch

    import fastconv.torch as fct
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 4)
    conv, bn = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)
    xn, act = x.numpy(), None if train else "relu"
    if train:
        module = fct.patch(torch.nn.Sequential(conv))
        xr = x.clone().requires_grad_(True)

        def adapter():
            return module(xr)
        w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()

        def inner():
            return fastconv.conv2d(xn, w, b)
    else:
        module = fct.FusedConv2d(conv.eval(), bn.eval(), act).eval()

        def adapter():
            return module(x)
        w, b = module._fold()
        plan = api.Conv2dPlan(xn, w, b, activation=act)

        def inner():
            return api.run_plan(plan, xn, w, b)
    spec = api._conv_spec(xn, w, b, 1, 0, 1, 1, "conv2d")
    act = activation_arg("bench", act)
    kernel, kw = dispatch.choose("conv2d.fwd", spec, caller="bench", act=act), {} if act is None else {"act": act}

    def bare():
        return kernel.run(spec, xn, w, b, **kw)

    def best(fn):
        fn()
        return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000
    with contextlib.nullcontext() if train else torch.no_grad():
        module_s, inner_s, kernel_s = best(adapter), best(inner), best(bare)
    return {"adapter": max(0.0, module_s - inner_s) * 1e6, "outside_kernel": max(0.0, module_s - kernel_s) * 1e6}


def run(name: str, batch: int = 1, train: bool = False, compare=(TORCH,), repeats: int = 5, progress=print) -> dict:
    calls = contenders(name, batch, train, compare, progress)
    progress(f"timing: {repeats} interleaved rounds")
    times = timing.interleaved(calls, repeats)
    medians = {k: statistics.median(v) for k, v in times.items()}
    time.sleep(timing.PAUSE_S)
    calls[FASTCONV]()
    with instrumented() as spent:
        t0 = time.perf_counter()
        calls[FASTCONV]()
        instrumented_s = time.perf_counter() - t0
    layers = sorted(([k, *v] for k, v in spent.items()), key=lambda r: -r[1])
    n_calls = sum(r[2] for r in layers)
    return {"model": name, "batch": batch, "train": train, "times": times, "medians": medians,
            "layers": [{"call": _describe(k), "ms": s * 1e3, "calls": c, "kernels": kn} for k, s, c, kn in layers],
            "instrumented_ms": instrumented_s * 1e3, "fastconv_ms": sum(r[1] for r in layers) * 1e3,
            "fastconv_calls": n_calls, "instrumentation_us_per_call": instrumentation_us(),
            **{f"{k}_us_per_call": v for k, v in adapter_overhead_us(train).items()}}


def _describe(key) -> str:
    fn, shapes, hyper = key
    return f"{fn} " + " * ".join("x".join(map(str, s)) for s in shapes[:2]) + " " + \
        ", ".join(str(h).replace(" ", "") for h in hyper)


def format_report(r: dict, top: int = 12) -> str:
    import torch
    what = "training step (forward, loss, backward, SGD)" if r["train"] else "inference (no_grad)"
    med = r["medians"]
    lines = [machine_line(None),
             f"model {r['model']}, batch {r['batch']}, float32, {what}; torch {torch.__version__}; "
             f"median of {len(r['times'][TORCH])} interleaved rounds",
             f"  {'contender':14s} {'ms':>9s}  vs torch"]
    for k, v in med.items():
        label = k + (" (optimize)" if k == FASTCONV and not r["train"] else " (patch)" if k == FASTCONV else "")
        lines.append(f"  {label:24s} {v * 1e3:9.2f}  {med[TORCH] / v:5.2f}x")
    # the instrumentation's own cost, outside the calls it times, is not the model's
    own = r["instrumentation_us_per_call"] * r["fastconv_calls"] / 1e3
    total = r["instrumented_ms"] - own
    lines += ["", f"where fastconv's {total:.2f} ms go (one instrumented call, its {own:.2f} ms of "
                  f"instrumentation taken out):",
              f"  fastconv calls (kernels + dispatch)  {r['fastconv_ms']:8.2f} ms  {r['fastconv_ms'] / total:5.1%}"
              f"  ({r['fastconv_calls']} calls)",
              f"  torch's other ops, Python, adapter   {total - r['fastconv_ms']:8.2f} ms  "
              f"{1 - r['fastconv_ms'] / total:5.1%}",
              f"  of which the adapter, about          {r['adapter_us_per_call'] * r['fastconv_calls'] / 1e3:8.2f} ms"
              f"  ({r['adapter_us_per_call']:.1f} us per layer call, measured on a 1x4x4x4 layer; with fastconv's "
              f"dispatch, all outside the kernel: {r['outside_kernel_us_per_call']:.1f} us)",
              "", f"  the {min(top, len(r['layers']))} costliest fastconv calls:"]
    for layer in r["layers"][:top]:
        lines.append(f"  {layer['ms']:8.3f} ms  x{layer['calls']:<3d} {layer['call']:60s} {layer['kernels']}")
    return "\n".join(lines)
