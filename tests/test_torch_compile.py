"""torch.compile and torch.export of patched models: fastconv's calls are torch.library custom ops
(shape functions, autograd formulas), so a patched ResNet-18 compiles into one graph holding them
and exports; both compute what eager native torch computes."""
import copy

import pytest

torch = pytest.importorskip("torch")
import fastconv.torch as fct  # noqa: E402
from fastconv.torch_models import resnet18  # noqa: E402

from conftest import rel_err  # noqa: E402

OPS = {"fastconv.conv2d.default", "fastconv.max_pool2d.default"}


def _fastconv_nodes(graph) -> dict:
    counts = {}
    for node in graph.nodes:
        name = str(node.target)
        if node.op == "call_function" and name in OPS:
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_torch_compile_of_a_patched_resnet18_has_one_graph_on_fastconvs_ops():
    torch.manual_seed(0)
    native = resnet18(num_classes=10).double()
    patched = fct.patch(copy.deepcopy(native))
    graphs = []

    def backend(gm, example_inputs):  # dynamo's graph as captured, then run as is
        graphs.append(gm)
        return gm.forward
    compiled = torch.compile(patched, backend=backend, fullgraph=True)  # fullgraph: a break is an error
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (native, compiled):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out.square().sum().backward()
        outs.append((out.detach(), xi.grad, [p.grad for p in (native if model is native else patched).parameters()]))
    assert len(graphs) == 1
    assert _fastconv_nodes(graphs[0].graph) == {"fastconv.conv2d.default": 20, "fastconv.max_pool2d.default": 1}
    assert rel_err(outs[1][0].numpy(), outs[0][0].numpy()) <= 1e-10
    assert rel_err(outs[1][1].numpy(), outs[0][1].numpy()) <= 1e-9
    scale = max(float(g.abs().max()) for g in outs[0][2])
    for a, b in zip(outs[0][2], outs[1][2]):
        assert float((a - b).abs().max()) <= 1e-9 * scale


def test_torch_compile_with_aot_autograd_traces_fastconvs_backward():
    # aot_eager traces the backward too: the ops' autograd formulas and fake tensors are used
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding="same"), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2, ceil_mode=True), torch.nn.Conv2d(8, 4, 3, stride=2, groups=2),
                                torch.nn.Flatten()).double()
    native, patched = copy.deepcopy(model), fct.patch(model)
    compiled = torch.compile(patched, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 13, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    results = []
    for m, params in ((native, native), (compiled, patched)):
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        results.append([out.detach(), xi.grad] + [p.grad for p in params.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_torch_export_of_a_patched_model_runs_fastconvs_ops():
    torch.manual_seed(0)
    native = resnet18(num_classes=10).eval()
    patched = fct.patch(copy.deepcopy(native))
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    program = torch.export.export(patched, (x,))
    assert _fastconv_nodes(program.graph) == {"fastconv.conv2d.default": 20, "fastconv.max_pool2d.default": 1}
    with torch.no_grad():
        expected = native(x)
        assert rel_err(program.module()(x).numpy(), expected.numpy()) <= 2e-4
