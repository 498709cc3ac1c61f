"""The measuring dispatcher and its tuning cache: measured choice, the cache file's life (round
trip, corruption, foreign files, concurrent writers, read-only directories), explain, tune,
frozen mode, export/import and the heuristic.

Most tests inject fake kernels through the registry (the NumPy reference's run, optionally made
slow) so that which kernel is fastest is known, and timing them is quick."""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import fastconv as fc
from fastconv import dispatch, registry, spec as specs, threads, timing
from fastconv.dispatch import measure, settings, tuning, tuning_cache
from fastconv.registry import Kernel
from fastconv.spec import ConvSpec

from conftest import rel_err

SHAPES = ((1, 5, 6, 6), (3, 5, 3, 3))  # tiny (the reference runs it in microseconds), not a first layer
SLOW_S = 0.004


def fake(name, op="conv2d.fwd", delay=0.0, why_not=None, rtol=None, wrong=False):
    """A kernel computing the reference's result (optionally late, or wrong)."""
    ref = registry.kernels(op)[-1].run

    def run(spec, *args):
        if delay:
            time.sleep(delay)
        out = ref(spec, *args)
        return out + 1 if wrong else out
    extra = {"rtol": rtol} if rtol else {}
    return Kernel(name, op, run, **({"why_not": why_not} if why_not else {}), **extra)


def install(monkeypatch, *kernels, op="conv2d.fwd"):
    """Replace op's kernels by these (the reference stays last)."""
    keep = tuple(k for k in registry.KERNELS if k.op != op or k.backend == "numpy")
    monkeypatch.setattr(registry, "KERNELS", tuple(kernels) + keep)


def spec_of(x_shape=SHAPES[0], w_shape=SHAPES[1], **kw):
    return ConvSpec.from_shapes(x_shape, w_shape, **kw)


def choose(spec, op="conv2d.fwd", **kw):
    return dispatch.choose(op, spec, caller="test", **kw)


def cache_file():
    return tuning_cache.current(threads.get_num_threads()).path


@pytest.fixture
def slow_and_fast(monkeypatch, measuring):
    """c.im2col_slow (the heuristic's pick: family im2col, C first) sleeps; numba.direct_fast
    does not."""
    slow, quick = fake("c.im2col_slow", delay=SLOW_S), fake("numba.direct_fast")
    install(monkeypatch, slow, quick)
    return slow, quick


def count_measurements(monkeypatch):
    calls = []
    real = measure.run

    def counting(*a, **kw):
        calls.append(a[:2])
        return real(*a, **kw)
    monkeypatch.setattr(measure, "run", counting)
    return calls


def forbid_measuring(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("measured in a mode that must not")
    monkeypatch.setattr(measure, "run", boom)


# ----------------------------------------------------------------------------- measured choice

def test_the_choice_is_the_measured_best_not_the_heuristic(slow_and_fast, monkeypatch):
    slow, quick = slow_and_fast
    spec = spec_of()
    assert dispatch.heuristic("conv2d.fwd", spec, [slow, quick]) is slow
    calls = count_measurements(monkeypatch)
    assert choose(spec) is quick
    assert choose(spec) is quick and len(calls) == 1  # then a dict lookup
    plan = fc.explain(*SHAPES)
    assert plan.chosen == quick.name and plan.source == "measured now" and plan.heuristic == slow.name
    assert plan.candidate(slow.name).median_s >= SLOW_S > plan.candidate(quick.name).median_s
    # the other way round, in a fresh cache: the choice follows the clock, not the names
    install(monkeypatch, fake("c.im2col_slow"), fake("numba.direct_fast", delay=SLOW_S))
    tuning_cache.clear()
    assert choose(spec).name == "c.im2col_slow"


def test_the_reference_is_a_candidate_only_when_nothing_else_is(slow_and_fast):
    plan = fc.explain(*SHAPES)
    assert "numpy.reference: the reference serves only when no other kernel can" in plan.refused
    assert "numpy.reference" not in [c.name for c in plan.candidates]
    assert choose(spec_of(), algo="reference").backend == "numpy"


def test_measuring_uses_its_own_inputs(slow_and_fast):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in (SHAPES[0], SHAPES[1], (3,)))
    before = [a.copy() for a in (x, w, b)]
    y = fc.conv2d(x, w, b)
    for a, a0 in zip((x, w, b), before):
        np.testing.assert_array_equal(a, a0)
        assert not np.shares_memory(y, a)
    np.testing.assert_allclose(y, fc.reference.conv2d(x, w, b), rtol=1e-5)


def test_a_kernel_far_over_its_error_bound_is_excluded(monkeypatch, measuring):
    install(monkeypatch, fake("c.im2col_wrong", wrong=True), fake("numba.direct_ok", delay=0.001))
    plan = fc.explain(*SHAPES)
    assert plan.chosen == "numba.direct_ok"
    assert "excluded: measured error" in plan.candidate("c.im2col_wrong").note


def test_backward_passes_are_tuned_separately(measuring):
    gy = np.ones((1, 3, 4, 4), np.float32)
    fc.conv2d_backward(gy, np.ones(SHAPES[0], np.float32), np.ones(SHAPES[1], np.float32), backend="c")
    ops = {e["op"] for e in json.load(open(cache_file()))["entries"].values()}
    assert ops == {"conv2d.bwd_data", "conv2d.bwd_weight"}


def test_thread_count_is_part_of_the_key(measuring):
    if threads.max_threads() < 2:
        pytest.skip("one thread only")
    assert tuning_cache.current(1).path != tuning_cache.current(2).path
    n = threads.get_num_threads()
    try:
        threads.set_num_threads(1)
        one = fc.explain(*SHAPES)
        threads.set_num_threads(2)
        two = fc.explain(*SHAPES)
    finally:
        threads.set_num_threads(n)
    assert (one.threads, two.threads) == (1, 2) and one.cache_file != two.cache_file
    assert one.source == two.source == "measured now"


def test_patient_trusts_only_patient_entries(slow_and_fast, monkeypatch):
    calls = count_measurements(monkeypatch)
    spec = spec_of()
    choose(spec)
    dispatch.set_tuning("patient")
    choose(spec)
    choose(spec)
    assert len(calls) == 2
    assert json.load(open(cache_file()))["entries"][tuning_cache.problem_key("conv2d.fwd", spec)]["rigor"] == "patient"


def test_a_near_tie_gets_a_runoff_and_every_timed_run_follows_a_warm_up():
    """Timing on a fake clock: each kernel's call advances it by its own cost; so the samples, the
    rounds each kernel got and its untimed calls are exactly known."""
    now = [0.0]
    calls = {}

    ref = registry.kernels("conv2d.fwd")[-1]

    def kernel(name, cost):
        def run(spec, *args):
            calls[name] = calls.get(name, 0) + 1
            now[0] += cost
            return ref.run(spec, *args)
        return Kernel(name, "conv2d.fwd", run)
    tied = [kernel("c.im2col_a", 1e-3), kernel("numba.direct_b", 1.1e-3)]
    slow = kernel("c.direct_c", 1.4e-3)  # within the racing ratio, but not in the runoff
    res = measure.run("conv2d.fwd", spec_of(), tied + [slow], ref, clock=lambda: now[0],
                      sleep=lambda s: now.__setitem__(0, now[0] + s))
    rounds, runoff = measure.RIGOR["measure"][0], measure.RIGOR["measure"][3]
    assert res.times["c.im2col_a"]["runs"] == res.times["numba.direct_b"]["runs"] == \
        measure.PROBE_CALLS + rounds + runoff
    assert res.times["c.direct_c"]["runs"] == measure.PROBE_CALLS + rounds
    assert res.best() == "c.im2col_a" and res.times["c.im2col_a"]["median"] == pytest.approx(1e-3)
    # compile; the probe's warm-up (WARM_S of calls, at least two) and two timed calls; per round a
    # warm-up and one timed call (1.4 ms each)
    warm = max(2, math.ceil(timing.WARM_S / 1.4e-3))
    assert calls["c.direct_c"] == 1 + (1 + rounds) * warm + measure.PROBE_CALLS + rounds
    assert res.cost_s <= res.budget_s + timing.SPIN_S + 0.1


@pytest.mark.parametrize("calls", [None, 5])
def test_a_timed_run_is_its_typical_call_not_its_stalls(calls):
    # one call of five stalls for 20x its time (the VM descheduled it): the run's figure is the
    # median call, where a mean would be 5x the call's time
    now, costs = [0.0], iter([1e-3, 1e-3, 20e-3, 1e-3, 1e-3, 1e-3, 1e-3])

    def call():
        now[0] += next(costs)
    assert timing.timed_run(call, calls, clock=lambda: now[0], seconds=4.5e-3) == pytest.approx(1e-3)


def test_measuring_stays_within_its_budget(monkeypatch, measuring):
    install(monkeypatch, fake("c.im2col_a", delay=0.02), fake("numba.direct_b", delay=0.02))
    dispatch.set_tuning(budget_s=0.1)
    t0 = time.perf_counter()
    plan = fc.explain(*SHAPES)
    # compile (untimed) + reference + probes (two calls each): rounds are cut to fit; here none do
    assert time.perf_counter() - t0 < 0.6
    assert all(c.runs == measure.PROBE_CALLS for c in plan.candidates)


# ----------------------------------------------------------------------------- the cache file

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastconv as fc
    x = np.ones((1, 5, {h}, 6), np.float32); w = np.ones((3, 5, 3, 3), np.float32)
    fc.conv2d(x, w, backend="c")  # the C kernels only: no Numba kernel to load in every process
    p = fc.explain(x.shape, w.shape, backend="c")
    print(json.dumps([p.chosen, p.source, p.cache_file]))
""")


def run_script(code, cache_dir, **env):
    env = {**os.environ, "FASTCONV_CACHE_DIR": str(cache_dir), "FASTCONV_TUNING": "measure",
           "FASTCONV_TUNE_BUDGET_S": "0.3", **env}
    env.pop("FASTCONV_AUTOTUNE", None)
    # cwd: not the checkout, whose fastconv/ (no built extension) would shadow the installed package
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cache_dir)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


PUT = textwrap.dedent("""
    import json, sys
    from fastconv.dispatch import tuning_cache
    from fastconv.spec import PoolSpec, spec_to_json
    c = tuning_cache.current(int(sys.argv[2]))
    t = {"median": 1.0, "q1": 1.0, "q3": 1.0, "min": 1.0, "max": 1.0, "runs": 1}
    keys = []
    for i in range(20):  # complete entries (a malformed one would be dropped by the next reader)
        spec = PoolSpec.from_shape((1, 1, 2, 2 + 100 * int(sys.argv[1]) + i), 2)
        keys.append(tuning_cache.problem_key("maxpool2d.fwd", spec))
        c.put(keys[-1], {"op": "maxpool2d.fwd", "spec": spec_to_json(spec), "rigor": "measure",
                         "times": {"k.a": t}, "errors": {}, "failed": {}, "best": "k.a"})
    print(json.dumps(keys))
""")


def test_cache_round_trip_and_concurrent_writers(measuring):
    x, w = np.ones((1, 5, 6, 6), np.float32), np.ones((3, 5, 3, 3), np.float32)
    fc.conv2d(x, w, backend="c")  # measured here, read back by a fresh process below
    plan = fc.explain(x.shape, w.shape, backend="c")
    first = [plan.chosen, plan.source, plan.cache_file]
    assert first[1] == "measured now" and os.path.isfile(first[2])
    # at once: a process reading what the first stored, two measuring new problems, and two
    # hammering the same file with writes -- merge-on-write keeps every entry of every process
    n = str(threads.get_num_threads())
    env = {**os.environ, "FASTCONV_CACHE_DIR": str(measuring)}
    puts = [subprocess.Popen([sys.executable, "-c", PUT, str(i), n], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=measuring) for i in range(2)]
    again, *others = [finish(p) for p in [run_script(SCRIPT.format(h=h), measuring) for h in (6, 7, 8)]]
    put = [key for p in puts for key in finish(p)]
    # (a different file here means the kernels' sources changed during the test: a new environment)
    assert again == [first[0], "cache", first[2]], (first, again)
    assert [o[1] for o in others] == ["measured now"] * 2 and {o[2] for o in others} == {first[2]}
    entries = json.load(open(first[2]))["entries"]
    assert sorted(k.split("h=")[1].split(",")[0] for k in entries if k.startswith("conv2d")) == ["6", "7", "8"]
    assert len(put) == 40 and set(put) <= set(entries)


def _entry(spec, best, others=(), rigor="measure"):
    times = {best: {"median": 1e-9, "q1": 1e-9, "q3": 1e-9, "min": 1e-9, "max": 1e-9, "runs": 5}}
    times.update({o: {"median": 1.0, "q1": 1.0, "q3": 1.0, "min": 1.0, "max": 1.0, "runs": 5} for o in others})
    return {"op": "conv2d.fwd", "spec": specs.spec_to_json(spec), "rigor": rigor, "times": times,
            "errors": {}, "failed": {}, "best": best}


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _valid_doc(spec, best, others=(), **env_changes):
    cache = tuning_cache.current(threads.get_num_threads())
    return {"format": 1, "env_key": cache.key, "environment": {**cache.env, **env_changes},
            "entries": {tuning_cache.problem_key("conv2d.fwd", spec): _entry(spec, best, others)}}


@pytest.mark.parametrize("damage, message", [
    ("garbage", "corrupt or truncated"),
    ("truncated", "corrupt or truncated"),
    ("not-a-cache", "not a fastconv tuning file"),
    ("foreign-machine", "another machine or build (differs in: cpu)"),
    ("other-version", "another machine or build (differs in: fastconv, kernels)"),
])
def test_damaged_or_foreign_files_are_reported_once_and_rebuilt(slow_and_fast, damage, message):
    slow, quick = slow_and_fast
    spec = spec_of()
    path = cache_file()
    good = json.dumps(_valid_doc(spec, slow.name, [quick.name]))  # a lie: slow would be "fastest"
    text = {"garbage": "\x00\xffnot json", "truncated": good[: len(good) // 2], "not-a-cache": "[1, 2, 3]",
            "foreign-machine": json.dumps(_valid_doc(spec, slow.name, [quick.name], cpu="Some Other CPU")),
            "other-version": json.dumps(_valid_doc(spec, slow.name, [quick.name], fastconv="0.0.1",
                                                   kernels="0123456789abcdef")),
            }[damage]
    _write(path, text)
    with pytest.warns(RuntimeWarning, match=re.escape(message)):
        assert choose(spec) is quick  # measured: the damaged file's entry is never trusted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        choose(spec_of((1, 5, 7, 7)))
    doc = json.load(open(path))  # rebuilt: ours, valid, with both measured problems
    assert doc["environment"] == tuning_cache.current(threads.get_num_threads()).env and len(doc["entries"]) == 2


def test_an_entry_naming_a_kernel_no_longer_registered_is_not_trusted(slow_and_fast):
    slow, quick = slow_and_fast
    spec = spec_of()
    _write(cache_file(), json.dumps(_valid_doc(spec, "numba.gone", [slow.name])))
    assert choose(spec) is quick


def test_a_valid_entry_is_used_without_measuring(slow_and_fast, monkeypatch):
    slow, quick = slow_and_fast
    spec = spec_of()
    _write(cache_file(), json.dumps(_valid_doc(spec, slow.name, [quick.name])))
    forbid_measuring(monkeypatch)
    assert choose(spec) is slow  # the file says so (the lie is ours: the file is trusted)
    plan = fc.explain(*SHAPES)
    assert plan.source == "cache" and cache_file() in plan.detail and plan.key in plan.detail


def _set(path, value):
    """A damage: entry[path...] = value, or deleted when value is DEL."""
    def damage(entry):
        *parents, last = path
        target = entry
        for p in parents:
            target = target[p]
        if value is DEL:
            del target[last]
        else:
            target[last] = value
        return entry
    return damage


DEL = object()
BEST, OTHER = "c.im2col_slow", "numba.direct_fast"
# Valid JSON of about the right shape, each lacking one field a reader uses or holding it mis-typed
MALFORMED = {
    "entry a list": lambda e: [e], "entry null": lambda e: None,
    "no times": _set(["times"], DEL), "times a list": _set(["times"], [1.0]),
    "a time a number": _set(["times", BEST], 1e-9),
    "no median": _set(["times", BEST, "median"], DEL), "median a string": _set(["times", BEST, "median"], "1e-9"),
    "median negative": _set(["times", BEST, "median"], -1.0),
    "median nan": _set(["times", BEST, "median"], math.nan),
    "median inf": _set(["times", BEST, "median"], math.inf), "median a bool": _set(["times", BEST, "median"], True),
    "no q1": _set(["times", BEST, "q1"], DEL), "no q3": _set(["times", OTHER, "q3"], DEL),
    "q3 a list": _set(["times", BEST, "q3"], [1.0]),
    "no runs": _set(["times", BEST, "runs"], DEL), "runs a float": _set(["times", BEST, "runs"], 2.5),
    "runs zero": _set(["times", BEST, "runs"], 0), "dropped a string": _set(["times", BEST, "dropped"], "no"),
    "errors as strings": _set(["errors"], {BEST: "1e-7"}), "errors a list": _set(["errors"], [0.0]),
    "failed a list": _set(["failed"], [OTHER]), "failed a number": _set(["failed"], {OTHER: 1}),
    "failed without a colon": _set(["failed"], {OTHER: "too slow"}),
    "failed of another kernel": _set(["failed"], {OTHER: "c.direct: too slow"}),
    "best a list": _set(["best"], [BEST]), "best a number": _set(["best"], 3),
    "no rigor": _set(["rigor"], DEL), "rigor a list": _set(["rigor"], ["measure"]),
    "rigor unknown": _set(["rigor"], "sloppy"), "cost a string": _set(["cost_s"], "1 s"),
    "budget negative": _set(["budget_s"], -1),
    "no op": _set(["op"], DEL), "op of another pass": _set(["op"], "conv2d.bwd_data"),
    "no spec": _set(["spec"], DEL), "spec a string": _set(["spec"], "ConvSpec(n=1)"),
    "spec of another problem": _set(["spec", "h"], 7), "spec missing a field": _set(["spec", "groups"], DEL),
    "spec of an unknown type": _set(["spec", "type"], "Conv3dSpec"),
    "spec nested": _set(["spec", "stride"], [[[[1]]]]),
}


@pytest.mark.parametrize("damage", sorted(MALFORMED))
def test_a_malformed_entry_is_dropped_and_every_reader_survives(damage, monkeypatch, capsys, measuring):
    from fastconv import cli

    slow, quick = fake(BEST), fake(OTHER)
    install(monkeypatch, slow, quick)
    spec, other = spec_of(), spec_of((1, 5, 7, 7))
    doc = _valid_doc(other, quick.name, [slow.name])  # a good entry beside it stays trusted
    doc["entries"][tuning_cache.problem_key("conv2d.fwd", spec)] = MALFORMED[damage](_entry(spec, slow.name, [quick.name]))
    _write(cache_file(), json.dumps(doc))
    dispatch.set_tuning("frozen")  # read the file, never time
    forbid_measuring(monkeypatch)
    with pytest.warns(RuntimeWarning, match="holds 1 malformed entries"):
        plan = fc.explain(*SHAPES)
    assert plan.source == "heuristic" and plan.detail == "mode frozen, no cache entry for it"
    str(plan), json.dumps(plan.to_dict())
    assert fc.explain((1, 5, 7, 7), SHAPES[1]).source == "cache"
    assert cli.main(["cache", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["entries"]
    assert [r["key"] for r in shown] == [tuning_cache.problem_key("conv2d.fwd", other)]
    assert cli.main(["cache", "show"]) == 0 and "x 1x5x7x7" in capsys.readouterr().out


def test_cache_show_survives_a_spec_of_the_right_types_but_absurd_values(measuring, capsys):
    from fastconv import cli

    absurd = dataclasses.replace(spec_of(), groups=0)  # groups=0: weight_shape divides by it
    _write(cache_file(), json.dumps(_valid_doc(absurd, "c.im2col")))
    assert cli.main(["cache", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["entries"]
    assert "groups=0" in shown[0]["shape"]  # the key's text stands in for the description
    assert cli.main(["cache", "show"]) == 0


@pytest.mark.parametrize("text", ["[" * 100000, '{"format": 1, "entries": {"k": ' + "[" * 100000, "1" * 5000])
def test_an_absurd_file_is_reported_as_corrupt_and_rebuilt(slow_and_fast, capsys, text):
    """Deep nesting raised RecursionError from json.loads (and a 5000-digit number ValueError) into
    every auto call, and the file was never rebuilt."""
    from fastconv import cli

    _, quick = slow_and_fast
    _write(cache_file(), text)
    with pytest.warns(RuntimeWarning, match="corrupt or truncated"):
        assert cli.main(["cache", "show"]) == 0
    assert "(0 entries" in capsys.readouterr().out
    assert choose(spec_of()) is quick  # measured, and the file rewritten
    assert len(json.load(open(cache_file()))["entries"]) == 1


def test_import_refuses_a_file_with_malformed_entries(measuring, tmp_path):
    cache = tuning_cache.current(threads.get_num_threads())
    doc = _valid_doc(spec_of(), "c.im2col")
    next(iter(doc["entries"].values()))["times"]["c.im2col"].pop("q1")
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(doc))
    with pytest.raises(tuning_cache.CacheFileError, match=r"1 malformed entries .*lacks a median, q1 or q3"):
        cache.import_(str(shipped))


def test_unwritable_directory_degrades_to_memory(slow_and_fast, monkeypatch, tmp_path):
    _, quick = slow_and_fast
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker / "cache"))  # a directory that cannot exist
    calls = count_measurements(monkeypatch)
    with pytest.warns(RuntimeWarning, match="kept in memory only"):
        assert choose(spec_of()) is quick
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose(spec_of((1, 5, 7, 7))) is quick
        dispatch.forget()
        assert choose(spec_of()) is quick  # from the in-memory entries
    assert len(calls) == 2


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_degrades_to_memory(slow_and_fast, measuring):
    _, quick = slow_and_fast
    measuring.mkdir()
    measuring.chmod(0o555)
    try:
        with pytest.warns(RuntimeWarning, match="kept in memory only"):
            assert choose(spec_of()) is quick
    finally:
        measuring.chmod(0o755)


# ----------------------------------------------------------------------------- explain

def test_explain_says_why(monkeypatch, measuring):
    picky = fake("c.winograd_f4k3",
                 why_not=lambda s: None if s.stride == (1, 1) else f"needs stride 1, got {s.stride[0]}")
    loose = fake("numba.winograd_f2k3", rtol={"float32": 1e-3, "float64": 1e-9})
    install(monkeypatch, picky, fake("c.im2col_slow", delay=SLOW_S), fake("numba.direct_fast"), loose)
    plan = fc.explain((1, 5, 7, 7), (3, 5, 3, 3), stride=2, rtol=1e-4)
    assert "c.winograd_f4k3: needs stride 1, got 2" in plan.refused
    assert any(r.startswith("numba.winograd_f2k3:") and "over the rtol=0.0001 budget" in r for r in plan.refused)
    assert plan.chosen == "numba.direct_fast" and plan.source == "measured now"
    fast = plan.candidate("numba.direct_fast")
    assert fast.median_s > 0 and fast.spread_s[0] <= fast.median_s <= fast.spread_s[1]
    assert fast.gflops > 0 and fast.error == 0.0 and fast.bound == 1e-5
    assert plan.tuning_cost_s > 0 and plan.saving_per_call_s >= SLOW_S * 0.5
    text = str(plan)
    for piece in ("chosen: numba.direct_fast", "median ms", "GFLOP/s", "not candidates:", "needs stride 1, got 2",
                  "tuning cost", "heuristic: c.im2col_slow"):
        assert piece in text
    json.dumps(plan.to_dict())
    dispatch.forget()  # a new process would read it from the cache file
    again = fc.explain((1, 5, 7, 7), (3, 5, 3, 3), stride=2, rtol=1e-4)
    assert again.source == "cache" and again.chosen == plan.chosen and again.key in again.detail


def test_explain_repro_runs_and_errors_name_the_argument():
    plan = fc.explain((1, 3, 8, 8), (4, 3, 3, 3), padding=1, op="conv2d.bwd_data")
    assert plan.source in ("heuristic", "only candidate")
    exec(plan.repro(), {})
    with pytest.raises(ValueError, match="op='conv2d.sideways'"):
        fc.explain((1, 3, 8, 8), (4, 3, 3, 3), op="conv2d.sideways")
    with pytest.raises(ValueError, match="groups=2 does not divide in_channels=3"):
        fc.explain((1, 3, 8, 8), (4, 3, 3, 3), groups=2)


# ----------------------------------------------------------------------------- modes

def test_frozen_mode_never_changes_a_choice(slow_and_fast, monkeypatch):
    slow, quick = slow_and_fast
    spec, other = spec_of(), spec_of((1, 5, 7, 7))
    assert choose(spec) is quick  # measured, in the file
    dispatch.set_tuning("frozen")
    forbid_measuring(monkeypatch)
    assert choose(spec) is quick  # from the cache
    plan = fc.explain(*SHAPES)
    assert plan.source == "cache"
    assert choose(other) is slow  # no entry: the heuristic, not timed
    assert "mode frozen" in fc.explain((1, 5, 7, 7), SHAPES[1]).detail
    # another process rewrites the file: this one's choices stay as they were
    _write(cache_file(), json.dumps(_valid_doc(spec, slow.name, [quick.name])))
    dispatch.forget()
    assert choose(spec) is quick and choose(other) is slow


def test_budget_zero_and_estimate_never_time(slow_and_fast, monkeypatch):
    slow, quick = slow_and_fast
    forbid_measuring(monkeypatch)
    dispatch.set_tuning("measure", budget_s=0)
    assert choose(spec_of()) is slow
    assert fc.explain(*SHAPES).detail == "tuning budget 0, no cache entry for it"
    dispatch.set_tuning("estimate", budget_s=5)
    assert choose(spec_of()) is slow and fc.explain(*SHAPES).source == "heuristic"
    assert not os.path.exists(cache_file())


def test_settings_from_the_environment(monkeypatch):
    for env, expected in [({"FASTCONV_TUNING": "frozen"}, ("frozen", 10.0)),
                          ({"FASTCONV_AUTOTUNE": "0"}, ("estimate", 10.0)),
                          ({"FASTCONV_TUNING": "patient", "FASTCONV_TUNE_BUDGET_S": "2.5"}, ("patient", 2.5))]:
        for name in ("FASTCONV_TUNING", "FASTCONV_AUTOTUNE", "FASTCONV_TUNE_BUDGET_S"):
            monkeypatch.delenv(name, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert settings.from_environment() == expected
    monkeypatch.setenv("FASTCONV_TUNING", "sloppy")
    with pytest.warns(RuntimeWarning, match="ignoring FASTCONV_TUNING='sloppy'"):
        settings.from_environment()
    with pytest.raises(ValueError, match="mode='sloppy'"):
        fc.set_tuning("sloppy")
    with pytest.raises(ValueError, match="budget_s=-1"):
        fc.set_tuning(budget_s=-1)


def test_cache_directory_follows_the_platform(monkeypatch):
    monkeypatch.delenv("FASTCONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    if sys.platform.startswith("linux"):
        assert tuning_cache.cache_dir() == "/somewhere/fastconv"
    monkeypatch.setenv("FASTCONV_CACHE_DIR", "/elsewhere")
    assert tuning_cache.cache_dir() == "/elsewhere"


# ----------------------------------------------------------------------------- export / import, tune

def test_export_then_import(slow_and_fast, monkeypatch, tmp_path):
    slow, quick = slow_and_fast
    spec = spec_of()
    choose(spec)
    cache = tuning_cache.current(threads.get_num_threads())
    shipped = tmp_path / "shipped.json"
    assert cache.export(str(shipped)) == 1
    tuning_cache.clear()
    dispatch.forget()
    assert cache.import_(str(shipped)) == 1
    forbid_measuring(monkeypatch)
    assert choose(spec) is quick and fc.explain(*SHAPES).source == "cache"
    doc = json.load(open(shipped))
    doc["environment"]["cpu"] = "Another CPU"
    shipped.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"another machine or build \(differs in: cpu\)"):
        cache.import_(str(shipped))
    assert cache.import_(str(shipped), force=True) == 1
    shipped.write_text("{truncated")
    with pytest.raises(ValueError, match="corrupt"):
        cache.import_(str(shipped))


def test_tune_fills_the_cache_with_a_progress_bar(slow_and_fast, monkeypatch):
    import io

    from fastconv import nets

    slow, quick = slow_and_fast
    bar = io.StringIO()
    specs = [spec_of(), spec_of((1, 5, 7, 7)), spec_of()]  # the duplicate is tuned once
    plans = fc.tune(specs, progress=bar)
    assert [p.chosen for p in plans] == [quick.name] * 2 and all(p.source == "measured now" for p in plans)
    assert "2/2" in bar.getvalue() and bar.getvalue().endswith("\n")
    assert all(p.heuristic == slow.name and p.heuristic_ratio > 1 for p in plans)
    forbid_measuring(monkeypatch)
    assert [p.source for p in fc.tune(specs, progress=False)] == ["cache"] * 2
    # a net's layers: every op of the requested passes, each distinct shape once
    todo = tuning._problems(None, "resnet18", 1, "float32", ("fwd", "bwd"))
    ops = [op for _, op, _ in todo]
    layers = nets.get("resnet18")
    convs = sum(layer.kind == "conv" for layer in layers)
    assert ops.count("conv2d.fwd") == ops.count("conv2d.bwd_data") == ops.count("conv2d.bwd_weight") == convs
    assert ops.count("maxpool2d.fwd") == ops.count("maxpool2d.bwd") == len(layers) - convs
    with pytest.raises(ValueError, match="unknown net"):
        fc.tune(net="lenet9")


def test_tune_names_what_it_cannot_tune():
    from fastconv.spec import PoolSpec

    with pytest.raises(TypeError, match=r"tune: problem \('conv2d.fwd', 3\) is not a valid \(op, spec\) pair"):
        fc.tune(problems=[("conv2d.fwd", 3)])
    pool = PoolSpec.from_shape((1, 1, 4, 4), 2)
    with pytest.raises(TypeError, match="conv2d.bwd_data takes a ConvSpec, got PoolSpec"):
        fc.tune([("conv2d.bwd_data", pool)])
    with pytest.raises(TypeError, match="maxpool2d.bwd takes a PoolBackwardSpec, got PoolSpec"):
        fc.tune([("maxpool2d.bwd", pool)])
    assert all(isinstance(op.spec_type, type) for op in registry.OPS.values())  # every op's spec type is known
    for kw in ({}, {"net": "lenet5"}, {"problems": [spec_of()]}):
        with pytest.raises(TypeError, match="tune: dtype=int8 is not supported; expected float32 or float64"):
            fc.tune(dtype="int8", **kw)
    for kw, message in (({}, "nothing to tune"), ({"problems": []}, "nothing to tune"),
                        ({"net": ",,,"}, "net=',,,' names no network"), ({"net": []}, "net=\\[\\] names no network")):
        with pytest.raises(ValueError, match=message):
            fc.tune(**kw)
    with pytest.raises(TypeError, match="problems=.* must be a sequence"):
        fc.tune(spec_of())


# ----------------------------------------------------------------------------- the heuristic

def test_heuristic_rule(monkeypatch):
    kernels = [fake("c.direct"), fake("c.im2col"), fake("numba.im2col"), fake("numba.direct"),
               fake("c.winograd_f4k3"), fake("numba.winograd_f2k3")]
    install(monkeypatch, *kernels)

    def pick(x, w, op="conv2d.fwd", **kw):
        spec = spec_of(x, w, **kw)
        return dispatch.heuristic(op, spec, dispatch.eligible(op, spec, caller="t")[0]).name

    assert pick((1, 64, 56, 56), (64, 64, 3, 3), padding=1) == "c.winograd_f4k3"    # the largest tile
    assert pick((1, 64, 56, 56), (64, 64, 3, 3), padding=1, stride=2) == "c.im2col"
    assert pick((1, 3, 224, 224), (64, 3, 3, 3), padding=1) == "c.direct"             # a first layer
    assert pick((1, 8, 224, 224), (64, 8, 3, 3), padding=1) == "c.im2col"             # too few channels
    assert pick((1, 64, 56, 56), (64, 64, 3, 3), op="conv2d.bwd_data") == "c.winograd_f4k3"
    assert pick((1, 64, 56, 56), (64, 64, 3, 3), op="conv2d.bwd_weight") == "c.winograd_f4k3"
    assert pick((1, 64, 14, 14), (64, 64, 3, 3), op="conv2d.bwd_weight") == "c.im2col"   # too few tiles
    assert pick((1, 64, 56, 56), (64, 1, 3, 3), groups=64, op="conv2d.bwd_weight") == "c.depthwise"
    # a depthwise problem whose plane copy the depthwise kernels refuse: im2col's GEMMs would be dot products
    assert pick((1, 64, 56, 56), (64, 1, 3, 3), groups=64, padding=3000, dilation=3000,
                op="conv2d.bwd_weight") == "c.direct"
    # in estimate mode (the test session's) auto follows it, and C falls back to Numba
    x, w = np.ones((1, 8, 8, 8), np.float32), np.ones((4, 8, 3, 3), np.float32)
    assert choose(ConvSpec.from_args(x, w)).name == "c.im2col"
    assert choose(ConvSpec.from_args(x, w), backend="numba").name == "numba.im2col"


def test_the_rounds_run_in_shuffled_orders_so_no_kernel_always_follows_the_same_one():
    """A kernel timed right after a Numba one ran 13% slow in one run of three (fastconv.timing
    says why the order matters): after the first, every round runs its contenders in a new order,
    the same for the same seed."""
    now, log, paused = [0.0], [], [False]
    ref = registry.kernels("conv2d.fwd")[-1]

    def pause(seconds):
        now[0] += seconds
        paused[0] = True

    def kernel(name, cost):
        def run(spec, *args):  # the first call after a pause starts a kernel's slot
            if paused[0]:
                log.append(name)
                paused[0] = False
            now[0] += cost
            return ref.run(spec, *args)
        return Kernel(name, "conv2d.fwd", run)

    def slots(seed):
        log.clear()
        ks = [kernel("c.im2col_a", 1e-3), kernel("numba.direct_b", 1.01e-3), kernel("c.direct_c", 1.02e-3)]
        measure.run("conv2d.fwd", spec_of(), ks, ref, rigor="patient", seed=seed, clock=lambda: now[0],
                    sleep=pause)
        rounds = measure.RIGOR["patient"][0]
        assert len(log) == 3 * (1 + rounds)  # the probes, then one slot a kernel a round
        return [tuple(log[i:i + 3]) for i in range(3, len(log), 3)]

    orders = slots(seed=0)
    assert orders[0] == ("c.im2col_a", "numba.direct_b", "c.direct_c")  # the first as the probes went
    assert all(sorted(o) == sorted(orders[0]) for o in orders)  # every kernel once in every round
    assert len(set(orders)) > 1
    before = {name: {o[o.index(name) - 1] for o in orders if o.index(name)} for name in orders[0]}
    assert all(len(b) == 2 for b in before.values()), before
    assert slots(seed=0) == orders  # a seed repeats its orders


def test_calls_whose_weights_vary_are_timed_and_kept_as_a_problem_of_their_own(measuring, monkeypatch):
    # a training step gets new weights every call: Winograd's filter transform is then part of
    # every call, so the tuner times it so (no filter cache) and keeps that choice apart
    from fastconv.common import config, winograd
    x = np.random.default_rng(0).standard_normal((1, 16, 10, 10)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    spec = ConvSpec.from_args(x, w, None, 1, 1)
    winograd.FILTERS.clear()
    fixed = dispatch.choose("conv2d.fwd", spec, caller="t")
    kept_after_fixed = len(winograd.FILTERS)
    vary = config.WEIGHTS_VARY.set(True)
    try:
        varying = dispatch.choose("conv2d.fwd", spec, caller="t")
        assert len(winograd.FILTERS) == kept_after_fixed  # timed without keeping any transform
        y = fc.conv2d(x, w, padding=1, algo="winograd_f4k3", backend="numba")  # and run so
        assert len(winograd.FILTERS) == kept_after_fixed
        assert rel_err(y, fc.reference.conv2d(x, w, padding=1)) <= 5e-5
        w_nan = w.copy()
        w_nan[0, 0, 1, 1] = np.nan  # non-finite weights still reroute (to im2col), as with the cache
        np.testing.assert_array_equal(np.isnan(fc.conv2d(x, w_nan, padding=1, algo="winograd_f4k3")),
                                      np.isnan(fc.reference.conv2d(x, w_nan, padding=1)))
    finally:
        config.WEIGHTS_VARY.reset(vary)
    assert fixed.op == varying.op == "conv2d.fwd"
    doc = json.loads(open(tuning_cache.current(threads.get_num_threads()).path).read())
    keys = [k for k in doc["entries"] if k.startswith("conv2d.fwd ConvSpec(n=1, c_in=16, h=10")]
    assert sorted(keys) == sorted([tuning_cache.problem_key("conv2d.fwd", spec),
                                   tuning_cache.problem_key("conv2d.fwd", spec, True)])
    assert doc["entries"][tuning_cache.problem_key("conv2d.fwd", spec, True)]["weights_vary"] is True
    # both entries are valid on reading the file again (the key names the problem, flag included)
    tuning_cache.forget()
    doc = tuning_cache.read_document(tuning_cache.current(threads.get_num_threads()).path, None, strict=True)
    assert len([k for k in doc["entries"] if k in keys]) == 2  # strict: a malformed entry would raise


def test_a_forward_with_an_activation_is_timed_with_it_as_a_problem_of_its_own(measuring, monkeypatch):
    # the kernels apply an activation at different costs (c.direct in registers, im2col a pass over
    # rows): a call with one is timed with it, and kept apart from the call without
    ref = registry.kernels("conv2d.fwd")[-1].run
    seen, flipped = [], [False]

    def kernel(name, slow_with_act):
        def run(spec, *args, act=None):
            seen.append((name, act))
            if ((act is not None) == slow_with_act) != flipped[0]:
                time.sleep(SLOW_S)
            return ref(spec, *args, act=act)
        return Kernel(name, "conv2d.fwd", run)
    install(monkeypatch, kernel("c.im2col_pass", True), kernel("numba.direct_regs", False))
    x = np.random.default_rng(0).standard_normal(SHAPES[0]).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(SHAPES[1]).astype(np.float32)
    spec = ConvSpec.from_args(x, w, None, 1, 0)
    relu = specs.activation_arg("t", "relu")
    assert choose(spec).name == "c.im2col_pass"
    assert choose(spec, act=relu).name == "numba.direct_regs"
    assert ("c.im2col_pass", relu) in seen and ("numba.direct_regs", relu) in seen  # timed with it
    y = fc.conv2d(x, w, activation="relu")
    np.testing.assert_allclose(y, np.maximum(fc.reference.conv2d(x, w), 0), rtol=0, atol=1e-6)
    assert seen[-1] == ("numba.direct_regs", relu)
    plan = fc.explain(SHAPES[0], SHAPES[1], activation="relu")
    assert plan.chosen == "numba.direct_regs" and plan.source in ("measured now", "cache")
    assert ", then relu," in str(plan) and "activation='relu'" in plan.repro()
    plain, fused = (tuning_cache.problem_key("conv2d.fwd", spec), tuning_cache.problem_key("conv2d.fwd", spec, act=relu))
    doc = json.loads(open(cache_file()).read())
    assert {plain, fused} <= set(doc["entries"]) and doc["entries"][fused]["activation"] == "relu"
    assert doc["entries"][fused]["best"] == "numba.direct_regs" and doc["entries"][plain]["best"] == "c.im2col_pass"
    tuning_cache.forget()  # both entries valid on reading the file again (strict: a malformed one raises)
    doc = tuning_cache.read_document(cache_file(), None, strict=True)
    assert {plain, fused} <= set(doc["entries"])
    # frozen: a problem tuned only without its activation (`fastconv tune`) takes that entry, here
    # against the heuristic's pick
    other, flipped[0] = spec_of((1, 5, 7, 7)), True
    assert choose(other).name == "numba.direct_regs"
    dispatch.set_tuning("frozen")
    seen.clear()
    assert choose(other, act=relu).name == "numba.direct_regs" and not seen
    assert "timed without the relu" in fc.explain((1, 5, 7, 7), SHAPES[1], activation="relu").detail
    assert choose(spec, act=relu).name == "numba.direct_regs"  # its own entry first
    with pytest.raises(ValueError, match="only the forward"):
        fc.explain(SHAPES[0], SHAPES[1], op="conv2d.bwd_data", activation="relu")
