"""The peer libraries' calls for fastconv's ops, as the benchmarks time them (the registry's Op
records point here): torch's CPU functions, and ONNX Runtime's CPU provider on a one-node model.

Each builder takes a layer's spec (ConvSpec or PoolSpec: the pool backward needs the forward's
window) and the named arrays of its problem (numpy arrays for ONNX Runtime, tensors sharing their
memory for torch), and returns a call computing the op's result; building (importing the library,
making a session) happens once, outside the timed call.  torch and ONNX Runtime are optional:
they are imported here, on first use, never by ``import fastconv``.
"""
from __future__ import annotations

from .spec import ConvSpec, PoolSpec, conv_hyper, pool_hyper


# ----------------------------------------------------------------------------- torch

def torch_conv(which: str):
    """torch's call for a conv op: F.conv2d, or for one gradient what its autograd runs (aten's
    convolution_backward through torch.nn.grad)."""
    def call(spec: ConvSpec, t: dict):
        import torch
        hyper = conv_hyper(spec)
        if which == "fwd":
            x, w, b = t["x"], t["w"], t["bias"]
            return lambda: torch.nn.functional.conv2d(x, w, b, **hyper)
        grad_y = t["grad_y"]
        if which == "bwd_data":
            w = t["w"]
            return lambda: torch.nn.grad.conv2d_input(spec.input_shape, w, grad_y, **hyper)
        x = t["x"]
        return lambda: torch.nn.grad.conv2d_weight(x, spec.weight_shape, grad_y, **hyper)
    return call


def torch_pool(which: str):
    def call(spec: PoolSpec, t: dict):
        import torch
        h = pool_hyper(spec)
        if which == "fwd":
            x = t["x"]
            return lambda: torch.nn.functional.max_pool2d(x, **h)  # h: with indices as spec asks
        # The kernel autograd runs for max_pool2d's backward, from (grad_y, indices) to grad_x as
        # ours does.  Not max_unpool2d: it overwrites where overlapping windows (ResNet's 3x3/2
        # pool) must add.  The input tensor only gives the shape and layout.
        grad_y, indices = t["grad_y"], t["indices"]
        x = t["x"] if "x" in t else torch.empty(spec.input_shape, dtype=getattr(torch, spec.dtype))
        args = (h["kernel_size"], h["stride"], h["padding"], h["dilation"], h["ceil_mode"])
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(grad_y, x, *args, indices)
    return call


# ----------------------------------------------------------------------------- ONNX Runtime

ONNX_OPSET, ONNX_IR = 17, 8  # what ONNX Runtime 1.1x-1.3x all load


def onnxruntime_options(threads: int):
    """Session options for a contender timed beside others: ``threads`` intra-op threads, and their
    spinning turned off -- ONNX Runtime's pool threads otherwise busy-wait after every run and take
    the cores from whoever runs next (measured: the contender after it ran up to 2x slow)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def _session(node, inputs, outputs, initializers, threads: int):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([node], "fastconv_peer", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = ONNX_IR
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), onnxruntime_options(threads),
                                providers=["CPUExecutionProvider"])


def onnxruntime_conv(spec: ConvSpec, data: dict, threads: int):
    """A Conv node with the weights and bias as initializers (so ONNX Runtime may pre-pack them, as
    it does in a real model); the call feeds x.  float32 only (its CPU Conv has no double kernel)."""
    from onnx import TensorProto, helper, numpy_helper

    if spec.dtype != "float32":
        return None
    t, b, l, r = spec.padding
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[spec.kh, spec.kw], strides=list(spec.stride),
                            pads=[t, l, b, r], dilations=list(spec.dilation), group=spec.groups)
    sess = _session(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(spec.input_shape))],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(spec.output_shape))],
                    [numpy_helper.from_array(data["w"], "w"), numpy_helper.from_array(data["bias"], "b")], threads)
    feed = {"x": data["x"]}
    return lambda: sess.run(None, feed)[0]


def onnxruntime_pool(spec: PoolSpec, data: dict, threads: int):
    """A MaxPool node, with its Indices output when spec asks for indices (as fastconv and torch
    then compute them)."""
    from onnx import TensorProto, helper

    if spec.dtype != "float32":
        return None
    (ph, pw) = spec.padding
    outputs = ["y", "i"] if spec.indices else ["y"]
    node = helper.make_node("MaxPool", ["x"], outputs, kernel_shape=list(spec.kernel), strides=list(spec.stride),
                            pads=[ph, pw, ph, pw], dilations=list(spec.dilation), ceil_mode=int(spec.ceil_mode))
    sess = _session(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(spec.input_shape))],
                    [helper.make_tensor_value_info(o, TensorProto.INT64 if o == "i" else TensorProto.FLOAT,
                                                   list(spec.output_shape)) for o in outputs], [], threads)
    feed = {"x": data["x"]}
    return lambda: tuple(sess.run(None, feed))
