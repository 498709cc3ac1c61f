"""fastconv: fast CPU conv2d and max-pool for NumPy arrays, with PyTorch's semantics.

    import fastconv as fc
    y = fc.conv2d(x, w, bias, stride=1, padding=1)
    y, idx = fc.max_pool2d(y, 2)

See API.md for the contract; ``fc.kernels()`` lists every registered kernel, ``fc.explain(...)``
says which one ``algo="auto"`` picks for a shape and why, ``fc.tune(net="vgg16")`` fills the
tuning cache ahead of time.
"""
from . import reference
from ._version import __version__
from .api import conv2d, conv2d_backward, max_pool2d, max_pool2d_backward
from .dispatch import Plan, explain, get_tuning, set_tuning, tune
from .registry import Kernel, kernels
from .threads import get_num_threads, set_num_threads

__all__ = [
    "__version__", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
    "kernels", "Kernel", "set_num_threads", "get_num_threads", "reference",
    "explain", "tune", "Plan", "set_tuning", "get_tuning",
]
