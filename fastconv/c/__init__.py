"""Thin wrappers over the cffi extension fastconv._cconv, one file per algorithm."""
