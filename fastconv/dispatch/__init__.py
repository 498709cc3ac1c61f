"""The dispatcher: which registered kernel runs a problem.  FFTW's planner, keyed as PyTorch keys
its benchmark cache.  In parts, each importing only those below it:

    tuning.py        tune / verify: ahead-of-time timing over networks (``fastconv tune``)
    plans.py         Plan, explain: a decision and why, in a table; describe; repro
    choosing.py      choose / decide: eligibility, the heuristic, the memo, set_tuning
    measure.py       timing the candidates of one problem within a budget (the tuner)
    tuning_cache.py  the choices on disk, per environment (machine, build, backends)
    settings.py      the mode and the budget, from the environment

Modes (``FASTCONV_TUNING`` or ``set_tuning``), as FFTW's planner rigor:

- ``measure`` (default): the first time a problem key (op, spec incl. dtype, algo/backend/rtol,
  thread count) meets several eligible kernels, they are timed (measure.py) on random inputs of
  the spec's shapes, the fastest is kept in memory and in the tuning cache on disk
  (tuning_cache.py), and every later call is a dict lookup;
- ``patient``: more rounds, no early drop of slow contenders, and it trusts only patient entries;
- ``estimate`` (also ``FASTCONV_AUTOTUNE=0``): the heuristic, no timing;
- ``frozen``: choices never change at run time: a cache entry when there is one (the file is read
  once), else the heuristic; nothing is timed or written.

A time budget of 0 (``FASTCONV_TUNE_BUDGET_S=0`` or ``set_tuning(budget_s=0)``) never times either:
a complete cache entry, else the heuristic.  The heuristic is the registry's preference
(fastconv/registry.py: ``Kernel.preference``), so the dispatcher names no kernel and no family.
"""
from .choosing import choose, decide, eligible, forget, get_tuning, heuristic, set_tuning, state
from .plans import CONV_OPS, Candidate, Plan, describe, explain, explain_spec
from .settings import DEFAULT_BUDGET_S, MODES
from .tuning import tune, verify

__all__ = ["choose", "decide", "state", "eligible", "heuristic", "explain", "explain_spec", "tune", "verify", "Plan",
           "Candidate", "set_tuning", "get_tuning", "forget", "describe", "MODES", "DEFAULT_BUDGET_S", "CONV_OPS"]
