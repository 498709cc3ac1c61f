"""Build the optional C extension through cffi; everything else is in pyproject.toml.

The extension is optional (as markupsafe does it): if it cannot be compiled the package still
installs and runs on Numba, and ``fastconv kernels`` says why C is missing.  Set
FASTCONV_REQUIRE_C=1 (CI does) to make a failed C build fatal instead.
"""
import os

from setuptools import setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # CCompilerError, ExecError, PlatformError, ...
            self._give_up(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc):
        if os.environ.get("FASTCONV_REQUIRE_C") == "1":
            raise
        print(f"WARNING: fastconv's C extension could not be built ({exc}); "
              "the package will run on its Numba kernels only.")


setup(
    cffi_modules=["fastconv/_build_cffi.py:ffibuilder"],
    cmdclass={"build_ext": optional_build_ext},
)
