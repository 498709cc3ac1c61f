"""Tuning ahead of time: ``tune`` times the eligible kernels of a network's layers (or of given
problems) and stores the winners in the tuning cache, like FFTW's wisdom; ``verify`` re-times
the choices afterwards on new inputs (``fastconv tune --verify``)."""
from __future__ import annotations

import math
from typing import Optional

from .. import nets, registry, threads
from ..progress import Progress
from ..progress import stream as progress_stream
from ..spec import PARAM_LIMIT, ConvSpec, PoolSpec, float_dtype
from . import choosing, measure, settings
from .plans import describe, plan_of


def _problems(problems, net, batch, dtype, passes) -> list:
    """[(label, op, spec)] without duplicates; TypeError/ValueError naming what cannot be tuned."""
    for p in passes:
        if p not in registry.PASSES:
            raise ValueError(f"tune: pass {p!r} is not one of {', '.join(registry.PASSES)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= PARAM_LIMIT:
        raise ValueError(f"tune: batch={batch!r} must be a positive int (at most {PARAM_LIMIT})")
    if net is not None and not isinstance(net, (str, tuple, list)):
        raise TypeError(f"tune: net={net!r} must be a name, a comma-separated string or a sequence of names")
    if problems is not None and not isinstance(problems, (tuple, list)):
        raise TypeError(f"tune: problems={problems!r} must be a sequence of problems (a list of one, for one)")
    float_dtype("tune", dtype)  # applies to net layers; checked even without them, so a typo never passes
    items = []
    names = [] if net is None else net.split(",") if isinstance(net, str) else list(net)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"tune: net={net!r} must be a name, a comma-separated string or a sequence of names")
    names = [n.strip() for n in names if n.strip()]
    if net is not None and not names:
        raise ValueError(f"tune: net={net!r} names no network; nothing to tune")
    for name in names:
        label = f"{name}." if len(names) > 1 else ""
        items += [(label + layer.name, layer) for layer in nets.get(name)]
    for p in problems or ():
        items.append((None, p))
    if not items:
        raise ValueError(f"tune: nothing to tune (problems={problems!r}, net={net!r})")
    out, seen = [], set()
    for label, p in items:
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
            op, spec = p
            if op not in registry.OPS:
                raise ValueError(f"tune: op={op!r} is not one of {', '.join(registry.OPS)}")
            if not isinstance(spec, registry.OPS[op].spec_type):
                raise TypeError(f"tune: problem {p!r} is not a valid (op, spec) pair: "
                                f"{op} takes a {registry.OPS[op].spec_type.__name__}, got {type(spec).__name__}")
            pairs = [(op, spec)]
        else:
            spec = p.spec(batch, dtype) if isinstance(p, nets.Layer) else p
            kind = "conv" if isinstance(spec, ConvSpec) else "pool" if isinstance(spec, PoolSpec) else None
            if kind is None:
                raise TypeError(f"tune: {p!r} is not a ConvSpec, PoolSpec, nets.Layer or (op, spec) pair")
            pairs = [(op, registry.OPS[op].spec_of(spec)) for ps in passes for op in registry.PASSES[ps][kind]]
        for op, spec in pairs:
            if (op, spec) not in seen:
                seen.add((op, spec))
                out.append((label or describe(op, spec), op, spec))
    return out


def tune(problems=None, *, net: Optional[str] = None, batch: int = 1, dtype: str = "float32",
         passes=("fwd",), rigor: str = "measure", force: bool = False, budget_s: Optional[float] = None,
         progress=None) -> list:
    """Time the eligible kernels of every problem and store the winners in the tuning cache, like
    FFTW's wisdom; returns a Plan per distinct problem.  problems: ConvSpec / PoolSpec / nets.Layer
    objects or (op, spec) pairs; net: layer tables of fastconv.nets, a name, a comma-separated
    list or a sequence of names (their layers at ``batch``);
    passes: "fwd" and/or "bwd" (grad of input and of weight, tuned separately); force: re-measure
    what the cache already holds.  progress: a stream for a progress bar (default: stderr when it
    is a terminal).  A problem that is not one of these, a dtype other than float32/float64, or
    nothing to tune at all (no problems, a net string of only commas) raise TypeError/ValueError."""
    if rigor not in ("measure", "patient"):
        raise ValueError(f"tune: rigor={rigor!r} must be 'measure' or 'patient'")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
                                 or not 0 < budget_s < math.inf):
        raise ValueError(f"tune: budget_s={budget_s!r} must be a positive number of seconds")
    if isinstance(passes, str):
        passes = (passes,)
    elif not isinstance(passes, (tuple, list)) or not all(isinstance(p, str) for p in passes):
        raise TypeError(f"tune: passes={passes!r} must be 'fwd', 'bwd' or a sequence of them")
    todo = _problems(problems, net, batch, dtype, tuple(passes))
    bar = Progress(progress_stream(progress), len(todo))
    n_threads = threads.get_num_threads()
    plans = []
    budget = budget_s if budget_s is not None else (settings.budget_s or settings.DEFAULT_BUDGET_S)
    for label, op, spec in todo:
        bar.step(label)
        key = (op, spec, "auto", "auto", None, n_threads, False, None)
        with choosing._lock:
            # frozen: the choices of this process do not change, but the cache is filled
            remember = settings.mode != "frozen" or key not in choosing._decisions
            d = choosing.decide(key, caller="tune", rigor=rigor, force=force, remember=remember, budget_s=budget)
        plan = plan_of(key, d)
        plan.label = label
        plans.append(plan)
    bar.done()
    return plans


def verify(plans, seed: int = 1, progress=None) -> list:
    """Re-time every plan's candidates afresh (new random inputs, PATIENT rigor: every candidate
    timed to the end, 14 rounds, so the yardstick is steadier than the choice) and report, per
    plan, how its choice holds up: {"fastest": name, "ratio": time of the choice / time of the
    fastest} by medians, and the same by best times ("fastest_min", "ratio_min"), which a busy
    machine's stalls spoil least.  Stores nothing."""
    bar = Progress(progress_stream(progress), len(plans))
    out = []
    for plan in plans:
        bar.step(plan.label or plan.describe())
        names = {c.name for c in plan.candidates}
        kernels = [k for k in registry.kernels(plan.op) if k.name in names]
        res = measure.run(plan.op, plan.spec, kernels, registry.kernels(plan.op)[-1], rigor="patient",
                          cap_s=settings.budget_s or settings.DEFAULT_BUDGET_S, seed=seed)
        row = {"fastest": None, "ratio": None, "fastest_min": None, "ratio_min": None}
        mine = res.times.get(plan.chosen)
        if mine is not None:
            for stat, suffix in (("median", ""), ("min", "_min")):
                best = min(res.times, key=lambda n: res.times[n][stat])
                row["fastest" + suffix] = best
                row["ratio" + suffix] = mine[stat] / res.times[best][stat]
        out.append(row)
    bar.done()
    return out
