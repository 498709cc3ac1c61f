"""pytest-benchmark suite (not under testpaths): `pytest benchmarks/ --benchmark-group-by=group`.

Speed lives here and in `fastconv bench`, never in tests.  Machine info records what a figure
depends on, so saved runs (--benchmark-autosave / --benchmark-compare) stay comparable."""
import numba
import numpy as np
import pytest

from fastconv import __version__, bench
from fastconv.c import _lib
from fastconv.threads import get_num_threads


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["cpu_model"] = bench.cpu_model()
    machine_info["fastconv"] = __version__
    machine_info["fastconv_c_build"] = _lib.build_info()
    machine_info["openmp"] = _lib.has_openmp()
    machine_info["threads"] = get_num_threads()
    machine_info["numba"] = numba.__version__
    machine_info["numpy"] = np.__version__


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="every layer of the nets, not the quick subset")


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py: pytest's default python_files (test_*.py) would find nothing here, and
    the suite's files keep their names so `pytest tests/` never picks them up."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") \
            and not parent.session.isinitpath(file_path):  # a file named on the command line is collected anyway
        return pytest.Module.from_parent(parent, path=file_path)
