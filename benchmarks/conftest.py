"""pytest-benchmark suite (not under testpaths): `pytest benchmarks/ --benchmark-group-by=param:layer`.

Speed lives here and in `fastconv bench`, never in tests.  Machine info records what a figure
depends on, so saved runs (--benchmark-autosave / --benchmark-compare) stay comparable.

With --benchmark-disable (CI) every contender runs once and is checked, nothing is timed: so
`auto` does not time either (the dispatcher's heuristic decides, the tuning cache is not touched)."""
import importlib.metadata
import importlib.util

import pytest

from fastconv import __version__, dispatch, machine, registry
from fastconv.threads import get_num_threads

# The torch contenders of bench_conv_layers.py are simply not generated without torch; this one
# module is all torch, so it is not collected (rather than reported as skipped).
collect_ignore = [] if importlib.util.find_spec("torch") else ["bench_torch_step.py"]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(machine.facts())  # cpu, ISA flags, cpus, python
    machine_info["isa"] = machine.isa_path()
    machine_info["fastconv"] = __version__
    machine_info["threads"] = get_num_threads()
    for backend in registry.BACKENDS.values():  # versions, builds, source hashes
        machine_info.update(backend.fingerprint())
        machine_info[f"{backend.name}_status"] = backend.status()
    if importlib.util.find_spec("torch"):
        machine_info["torch"] = importlib.metadata.version("torch")


def pytest_configure(config):
    if config.getoption("benchmark_disable", default=False):
        dispatch.set_tuning("estimate")


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="every layer of the nets, not the quick subset")


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py: pytest's default python_files (test_*.py) would find nothing here, and
    the suite's files keep their names so `pytest tests/` never picks them up."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") \
            and not parent.session.isinitpath(file_path):  # a file named on the command line is collected anyway
        return pytest.Module.from_parent(parent, path=file_path)
