"""An optimized model against ONNX Runtime running the whole exported graph, taken apart: where
does ONNX Runtime's lead on a whole model come from, when its single-layer sessions (the per-layer
tables of `fastconv bench --net`) are slower than fastconv's kernels?

    python benchmarks/ort_graph.py [mobilenet_v2|resnet18|...] [BATCH] [ROUNDS]

Prints, for a model of fastconv.torch_models (eval, random weights, 224x224), in one process:
- each contender's whole call, rounds alternating (min and median, ms), ONNX Runtime's session
  profiling (which itself adds tens of us per node) on;
- every convolution in the order it runs: fastconv's planned call (api.run_plan, the kernel and
  its dispatch) and ONNX Runtime's node (its profiler's kernel time; its convolutions carry the
  fused activations and residual additions), medians over the rounds, ms;
- the rest of the optimized model: its time with every fused layer's forward returning its
  stored output (the torch ops, Python and module calls between fastconv's calls);
- minor page faults per call of each (getrusage), which fresh output buffers would show.
"""
import collections
import copy
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import torch

import fastconv
import fastconv.torch as fct
from fastconv import api, timing, torch_models
from fastconv.peers import onnxruntime_options


def main(name: str = "mobilenet_v2", batch: int = 1, rounds: int = 9) -> None:
    import onnxruntime as ort
    torch.set_num_threads(fastconv.get_num_threads())
    torch.manual_seed(0)
    model = torch_models.MODELS[name]().eval()
    x = torch.randn(batch, 3, 224, 224)
    fast = fct.optimize(copy.deepcopy(model))
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17, input_names=["x"])
    options = onnxruntime_options(fastconv.get_num_threads())
    options.enable_profiling = True  # its JSON goes to the temp directory, removed once read
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "fastconv_ort_graph")
    session = ort.InferenceSession(f.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    calls, run_plan = [], api.run_plan

    def recorded(plan, *args):
        t0 = time.perf_counter()
        y = run_plan(plan, *args)
        calls.append((time.perf_counter() - t0, plan))
        return y
    whole = {"fastconv": [], "onnxruntime": []}
    with torch.no_grad():
        for _ in range(3):
            fast(x)
            session.run(None, feed)
        warm = 3
        api.run_plan = recorded
        try:
            for _ in range(rounds):
                for label, call in (("fastconv", lambda: fast(x)), ("onnxruntime", lambda: session.run(None, feed))):
                    time.sleep(timing.PAUSE_S)
                    call()  # untimed: the other contender's thread pool may still spin
                    t0 = time.perf_counter()
                    call()
                    whole[label].append(time.perf_counter() - t0)
        finally:
            api.run_plan = run_plan
        n = len(calls) // (2 * rounds)
        mine = [statistics.median(calls[i + k * n][0] for k in range(1, 2 * rounds, 2)) for i in range(n)]
        plans = [calls[i][1] for i in range(n)]
        profile = session.end_profiling()
        with open(profile) as fh:
            events = [e for e in json.load(fh) if e.get("cat") == "Node"
                      and e["name"].endswith("_kernel_time") and e["args"].get("op_name") == "Conv"]
        os.remove(profile)
        order, per_node = [], collections.defaultdict(list)
        for e in events:
            node = e["name"][:-len("_kernel_time")]
            if node not in per_node:
                order.append(node)
            per_node[node].append(e["dur"] * 1e-6)
        # per node: the warm-up calls, then per round an untimed and a timed call
        theirs = [statistics.median(per_node[node][warm:][1::2]) for node in order]

        outputs, forward = {}, fct.FusedConv2d.forward

        def keep(self, t):
            outputs[id(self)] = forward(self, t)
            return outputs[id(self)]

        def stored(self, t):
            return outputs[id(self)]
        fct.FusedConv2d.forward = keep
        fast(x)

        def real():
            fct.FusedConv2d.forward = forward
            fast(x)

        def stubbed():
            fct.FusedConv2d.forward = stored
            fast(x)
        try:
            rest = timing.interleaved({"real": real, "stubbed": stubbed}, rounds)
        finally:
            fct.FusedConv2d.forward = forward

        def faults(call, n=5):
            call()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(n):
                call()
            return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
        fault_counts = {"torch": faults(lambda: model(x)), "fastconv": faults(lambda: fast(x)),
                        "onnxruntime": faults(lambda: session.run(None, feed))}
    print(f"{name}, batch {batch}, {fastconv.get_num_threads()} threads, {rounds} rounds")
    for label, v in whole.items():
        print(f"  whole call  {label:12s} min {min(v) * 1e3:8.2f}  median {statistics.median(v) * 1e3:8.2f} ms")
    print(f"  convolutions: fastconv {n} calls {sum(mine) * 1e3:.2f} ms, onnxruntime {len(order)} nodes "
          f"{sum(theirs) * 1e3:.2f} ms (profiled)")
    if n == len(order):
        for plan, m, t in zip(plans, mine, theirs):
            s = plan.spec
            what = f"{s.n}x{s.c_in}x{s.h}x{s.w} -> {s.c_out} k{s.kh}x{s.kw} s{s.stride[0]} g{s.groups}"
            act = plan.kw.get("act", ("",))[0]
            print(f"    {what:36s} {act:6s} fastconv {m * 1e3:7.3f}  onnxruntime {t * 1e3:7.3f}  "
                  f"ratio {t / m:5.2f}  {plan.kernel.name}")
    print(f"  the rest of the optimized model (fused layers stubbed): min {min(rest['stubbed']) * 1e3:.3f}, "
          f"median {statistics.median(rest['stubbed']) * 1e3:.3f} ms; with them: min {min(rest['real']) * 1e3:.2f}")
    print("  minor page faults per call: " + ", ".join(f"{k} {v:.0f}" for k, v in fault_counts.items()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2", int(sys.argv[2]) if len(sys.argv) > 2 else 1,
         int(sys.argv[3]) if len(sys.argv) > 3 else 9)
