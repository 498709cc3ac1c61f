"""Numba kernels, one file per algorithm; decorator policy in _options.py."""
