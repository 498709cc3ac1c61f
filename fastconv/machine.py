"""Facts about the machine, in one place: what the tuning cache keys on and what benchmarks and
the CLI print.  /proc/cpuinfo is read once per process (Linux; elsewhere what ``platform`` knows).

A core module: it imports nothing of fastconv, so the tuning cache no longer reaches into the
benchmark tool for the CPU's name (which made a circle: api -> dispatch -> tuning_cache -> bench).
"""
from __future__ import annotations

import functools
import os
import platform
import sys


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo, or {} where it cannot be read."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends here
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's name: 'AMD EPYC', 'Intel(R) Xeon(R) ...'."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_label() -> str:
    """The CPU's name with its family and model where /proc/cpuinfo gives them: two generations of
    one brand name ('AMD EPYC') differ there ('family 25 model 1' Zen 3, 'model 17' Zen 4)."""
    info = _cpuinfo()
    fam, mod = info.get("cpu family"), info.get("model")
    return cpu_model() + (f", family {fam} model {mod}" if fam and mod else "")


def isa_flags() -> str:
    """The ISA flags, sorted ('Features' on ARM), or '' where they cannot be read."""
    info = _cpuinfo()
    return " ".join(sorted((info.get("flags") or info.get("Features") or "").split()))


# The flags of the x86-64 levels the C kernels are compiled for (GCC's arch=x86-64-v4 / -v3, which
# csrc/build_info.c's fc_cpu_isa checks through cpuid), as /proc/cpuinfo spells them.
_X86_64_V4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
_X86_64_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"}


def isa_path() -> str:
    """The widest x86 vector ISA the CPU offers, by the same levels as the C kernels' paths:
    avx512 (x86-64-v4), avx2 (x86-64-v3), generic."""
    flags = set(isa_flags().split())
    if _X86_64_V3 | _X86_64_V4 <= flags:
        return "avx512"
    if _X86_64_V3 <= flags:
        return "avx2"
    return "generic"


def python() -> str:
    return f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]}"


def facts() -> dict:
    """The machine and interpreter every timing depends on (the tuning cache keys on them)."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "isa_flags": isa_flags(), "cpus": os.cpu_count(),
            "python": python()}


def describe() -> str:
    """One line: 'AMD EPYC, family 25 model 17 (avx512), 2 CPUs, python 3.11.7'."""
    return f"{cpu_label()} ({isa_path()}), {os.cpu_count()} CPUs, python {platform.python_version()}"


__all__ = ["cpu_model", "cpu_label", "isa_flags", "isa_path", "python", "facts", "describe"]
