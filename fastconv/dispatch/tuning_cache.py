"""The tuning cache on disk: FFTW's wisdom, with FFTW's caveats applied.

Where: ``$FASTCONV_CACHE_DIR``, else the platform's user cache directory + ``fastconv``
(``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%``
on Windows).

What: one JSON file per *environment*, ``tuning-<key>.json``, where the key hashes everything a
timing depends on besides the problem: CPU model and ISA flags, CPU and thread counts, fastconv's
version, a hash of the shared kernel sources, the OpenBLAS version, and every backend's
fingerprint (its record: the C extension's build fingerprint, a hash of the binary itself,
compiler and flags included, and of its wrappers; numba's version and a hash of its kernels;
numpy's version).
The file also stores these fields, and a file whose fields differ from this process's is never
trusted (a copied file, another release): it is reported once and rebuilt.

The file::

    {"format": 1, "env_key": "...", "environment": {...},
     "entries": {"<op> <spec repr>": {"op": ..., "spec": {"type": "ConvSpec", <its fields>},
                                        "rigor": "measure", "best": "c.im2col",
                                        "times": {kernel: {"median": s, "q1": s, "q3": s, "min": s,
                                                           "max": s, "runs": n, "dropped": bool}},
                                        "errors": {kernel: max rel. error vs the reference},
                                        "failed": {kernel: "<kernel>: why it was excluded"},
                                        "cost_s": wall seconds of the measurement, "created": iso}}}

How: writes are atomic (a temporary file in the same directory, then ``os.replace``) and merge
what is on disk (re-read, merge, replace, under an ``fcntl`` lock where there is one), so
processes tuning at once keep each other's entries.  A corrupt, truncated, unreadable or foreign
file is reported once as a RuntimeWarning and rebuilt; an entry lacking a field that a reader uses,
holding one of the wrong type, or whose spec is not its key's problem, is reported once and
dropped (``_entry_problem``); a directory that cannot be written degrades to in-memory tuning
(reported once).  Nothing here ever raises into a conv2d call.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
import warnings

from .. import machine, registry
from .._version import __version__
from ..backend import sources_hash
from ..common import openblas
from ..spec import spec_from_json

FORMAT = 1
PREFIX = "tuning-"
RIGOR_RANK = {"measure": 1, "patient": 2}

_warned: set = set()  # (path, kind): each problem with a file is reported once per process
_warn_lock = threading.Lock()


def _warn_once(path: str, kind: str, message: str) -> None:
    with _warn_lock:
        if (path, kind) in _warned:
            return
        _warned.add((path, kind))
    warnings.warn(f"fastconv: {message}", RuntimeWarning, stacklevel=4)


# ----------------------------------------------------------------------------- where

def user_cache_dir() -> str:
    """The platform's per-user cache directory (no platformdirs dependency)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastconv")


def cache_dir() -> str:
    return os.environ.get("FASTCONV_CACHE_DIR") or user_cache_dir()


# ----------------------------------------------------------------------------- the environment key

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# The kernel code shared by the backends (each backend's own sources are in its fingerprint):
# editing any of it may change a kernel's speed.
SHARED_KERNEL_SOURCES = ("common", "threads.py", "registry.py")

_static_env: dict | None = None


def _static_environment() -> dict:
    """Every environment field but the thread count, computed once per process: the machine
    (fastconv/machine.py), fastconv's version and shared kernel sources, OpenBLAS's version, and
    each backend's fingerprint (its record: fastconv/backend.py)."""
    global _static_env
    if _static_env is None:
        facts = machine.facts()
        env = {**facts, "isa_flags": _sha(facts["isa_flags"].encode()), "fastconv": __version__,
               "kernels": sources_hash(*SHARED_KERNEL_SOURCES), "openblas": openblas.version()}
        for backend in registry.BACKENDS.values():
            env.update(backend.fingerprint())
        _static_env = env
    return _static_env


def problem_key(op: str, spec, weights_vary: bool = False, act=None) -> str:
    """A problem's key in the file (the thread count is part of the file's environment); calls
    whose weights change every time (fastconv.common.config.WEIGHTS_VARY) are a problem of their own,
    and so are forward calls with an activation (act: activation_arg's (name, slope); the kernels
    apply it at different costs, registers against a pass over rows; the slope costs nothing)."""
    return f"{op} {spec!r}" + (" weights-vary" if weights_vary else "") + (f" then {act[0]}" if act else "")


def environment(threads: int) -> dict:
    return {"format": FORMAT, **_static_environment(), "threads": threads}


def env_key(env: dict) -> str:
    return _sha(json.dumps(env, sort_keys=True).encode())


def _differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# ----------------------------------------------------------------------------- the file

@contextlib.contextmanager
def _locked(path: str):
    """An exclusive lock on path + '.lock' (fcntl where there is one; nothing elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace still keeps every write whole
        yield
        return
    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class CacheFileError(ValueError):
    """A tuning file asked for by name (import) that cannot be used: corrupt, malformed, or of
    another machine.  The CLI reports it as a bad argument (exit 2)."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _seconds(v) -> bool:
    return _number(v) and 0 <= v < math.inf  # also refuses NaN


def _entry_problem(key: str, entry) -> str | None:
    """What is wrong with one entry, or None.  Every field a reader uses (dispatch._pick and
    plan_of, `fastconv cache show`) is checked with its type here, so the readers need not
    guard: a hand-edited or half-written entry is dropped on load instead of raising in explain()."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    rigor = entry.get("rigor")
    if not isinstance(rigor, str) or rigor not in RIGOR_RANK:
        return f"rigor={rigor!r} is not one of {', '.join(RIGOR_RANK)}"
    times = entry.get("times")
    if not isinstance(times, dict):
        return "times is not an object"
    for name, t in times.items():
        if not isinstance(t, dict) or not all(_seconds(t.get(f)) for f in ("median", "q1", "q3")):
            return f"times[{name!r}] lacks a median, q1 or q3 in seconds"
        if not isinstance(t.get("runs"), int) or isinstance(t["runs"], bool) or t["runs"] < 1:
            return f"times[{name!r}] runs={t.get('runs')!r} is not a positive count"
        if not isinstance(t.get("dropped", False), bool):
            return f"times[{name!r}] dropped={t['dropped']!r} is not a bool"
    errors, failed = entry.get("errors", {}), entry.get("failed", {})
    if not isinstance(errors, dict) or not all(_number(e) for e in errors.values()):
        return "errors is not an object of numbers"
    # plan_of prints a reason without its leading "<kernel>: ", as measure.run writes it
    if not isinstance(failed, dict) or not all(isinstance(r, str) and r.startswith(f"{n}: ")
                                               for n, r in failed.items()):
        return "failed is not an object of '<kernel>: <reason>' strings"
    if not isinstance(entry.get("best"), (str, type(None))):
        return f"best={entry['best']!r} is not a kernel name"
    for f in ("cost_s", "budget_s"):
        if entry.get(f) is not None and not _seconds(entry[f]):
            return f"{f}={entry[f]!r} is not a number of seconds"
    # the spec must be the key's problem: `cache show` describes it, and an entry filed under
    # another problem's key would hand that problem foreign timings
    op = entry.get("op")
    try:
        spec = spec_from_json(entry.get("spec")) if isinstance(op, str) else None
        act = entry.get("activation")  # its name, when the problem has one
        same = spec is not None and problem_key(op, spec, entry.get("weights_vary") is True,
                                                (act,) if isinstance(act, str) else None) == key
    except RecursionError:  # absurdly nested values
        same = False
    if not same:
        return "op and spec are missing or are not the problem of its key"
    return None


def read_document(path: str, env: dict | None, *, strict: bool = False) -> dict:
    """The entries of a cache file.  A missing file is empty; a corrupt, unreadable or (when env
    is given) foreign one is reported once and treated as empty, and malformed entries are
    reported once and dropped; if strict, any of these raises CacheFileError instead."""
    def bad(kind: str, message: str) -> dict:
        if strict:
            raise CacheFileError(message)
        _warn_once(path, kind, message + "; ignoring it (it will be rebuilt)")
        return {}

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        if strict:
            raise
        return {}
    except OSError as exc:
        return bad("unreadable", f"cannot read the tuning cache {path} ({exc.strerror or exc})")
    try:
        doc = json.loads(raw.decode("utf-8"))
    # ValueError: bad UTF-8 or JSON, or an integer of thousands of digits; RecursionError: a file
    # of '[[[[...'; MemoryError: a file too large to hold.  All are just a corrupt file.
    except (ValueError, RecursionError, MemoryError) as exc:
        return bad("corrupt", f"the tuning cache {path} is corrupt or truncated ({type(exc).__name__}: "
                              f"{str(exc)[:200]})")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), dict) \
            or not isinstance(doc.get("environment"), dict):
        return bad("corrupt", f"the tuning cache {path} is not a fastconv tuning file of format {FORMAT}")
    if env is not None and doc["environment"] != env:
        diff = ", ".join(_differences(doc["environment"], env))
        return bad("foreign", f"the tuning cache {path} was written for another machine or build "
                              f"(differs in: {diff})")
    problems = {k: _entry_problem(k, e) for k, e in doc["entries"].items()}
    bad_keys = [k for k, why in problems.items() if why]
    if bad_keys:
        example = f"entry {bad_keys[0]!r}: {problems[bad_keys[0]]}"
        if strict:
            raise CacheFileError(f"{path}: {len(bad_keys)} malformed entries ({example})")
        # dropped here; the next write rewrites the file without them
        _warn_once(path, "entries", f"the tuning cache {path} holds {len(bad_keys)} malformed entries "
                                    f"({example}); ignoring them")
    doc["entries"] = {k: e for k, e in doc["entries"].items() if not problems[k]}
    return doc if strict else doc["entries"]


def _merge(into: dict, new: dict) -> dict:
    """Entries of new replace those of into, unless the one in into was measured more patiently."""
    for key, entry in new.items():
        old = into.get(key)
        if old is None or RIGOR_RANK.get(entry.get("rigor"), 0) >= RIGOR_RANK.get(old.get("rigor"), 0):
            into[key] = entry
    return into


def _write_atomically(path: str, doc: dict) -> None:
    """Write doc to path through a temporary file in its directory; an OSError names path (the
    file asked for), never the temporary file."""
    directory = os.path.dirname(path) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would make an exported file unreadable to others
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise


class TuningCache:
    """The entries of one environment: a dict in memory, backed by one file."""

    def __init__(self, directory: str, threads: int):
        self.directory = directory
        self.env = environment(threads)
        self.key = env_key(self.env)
        self.path = os.path.join(directory, f"{PREFIX}{self.key}.json")
        self.entries: dict = {}
        self.writable = True
        self._loaded = False
        self._lock = threading.RLock()

    def _document(self, entries: dict) -> dict:
        return {"format": FORMAT, "env_key": self.key, "environment": self.env, "entries": entries}

    def load(self) -> None:
        with self._lock:
            if not self._loaded:
                self.entries = read_document(self.path, self.env)
                self._loaded = True

    def get(self, key: str) -> dict | None:
        self.load()
        return self.entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        self.update({key: entry})

    def update(self, new: dict) -> None:
        """Add entries in memory and merge them into the file (re-read, merge, replace)."""
        with self._lock:
            self.load()
            _merge(self.entries, new)
            self._persist(lambda on_disk: _merge(on_disk, new))

    def _persist(self, combine) -> bool:
        """Under the file lock: re-read the file, write combine(its entries) atomically, and hold
        the result (so also what other processes wrote meanwhile).  False, and in-memory only from
        then on (reported once), when the directory cannot be written."""
        if not self.writable:
            return False
        try:
            os.makedirs(self.directory, exist_ok=True)
            with _locked(self.path):
                merged = combine(read_document(self.path, self.env))
                _write_atomically(self.path, self._document(merged))
            self.entries = merged
            return True
        except OSError as exc:
            self.writable = False
            _warn_once(self.directory, "readonly", f"cannot write the tuning cache in {self.directory} "
                                                   f"({exc.strerror or exc}); tuning results are kept in memory only")
            return False

    def reload(self) -> None:
        """Read the file again (other processes may have written): its entries win, and entries
        held only in memory (an unwritable directory) stay."""
        with self._lock:
            if not self._loaded:
                self.load()
                return
            self.entries = {**self.entries, **read_document(self.path, self.env)}

    def export(self, path: str) -> int:
        """Write this environment's entries to path (a file to ship or check in); their count."""
        with self._lock:
            self.reload()
            _write_atomically(os.path.abspath(path), self._document(self.entries))
            return len(self.entries)

    def import_(self, path: str, force: bool = False) -> int:
        """Merge the entries of an exported file; refuses (ValueError) a file of another machine or
        build unless force.  Imported entries replace this environment's for the same problems."""
        doc = read_document(path, None, strict=True)
        diff = _differences(doc["environment"], self.env)
        if diff and not force:
            raise CacheFileError(f"{path} was tuned for another machine or build (differs in: {', '.join(diff)}); "
                                 "its timings do not hold here (force=True / --force imports it anyway)")
        entries = doc["entries"]  # they replace entries of any rigor: shipped on purpose
        with self._lock:
            self.load()
            if not self._persist(lambda on_disk: {**on_disk, **entries}):
                self.entries.update(entries)
            return len(entries)


_caches: dict = {}
_caches_lock = threading.Lock()


def current(threads: int) -> TuningCache:
    """The cache of this process's environment at the given thread count, in the current
    cache directory (FASTCONV_CACHE_DIR is read on every call: it may change, e.g. in tests)."""
    directory = cache_dir()
    with _caches_lock:
        cache = _caches.get((directory, threads))
        if cache is None:
            cache = _caches[(directory, threads)] = TuningCache(directory, threads)
        return cache


def files(directory: str | None = None) -> list[str]:
    """Every tuning file in the directory, of any environment."""
    return sorted(glob.glob(os.path.join(directory or cache_dir(), PREFIX + "*.json")))


def clear(directory: str | None = None) -> list[str]:
    """Delete every tuning file (all environments) and its lock; forget what was loaded."""
    directory = directory or cache_dir()
    removed = []
    for path in files(directory):
        for p in (path, path + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        removed.append(path)
    for tmp in glob.glob(os.path.join(directory, ".tmp-*.json")):  # left by a process killed mid-write
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    with _caches_lock:
        for (d, _), cache in list(_caches.items()):
            if d == directory:
                with cache._lock:
                    cache.entries, cache._loaded = {}, True
    return removed


def forget() -> None:
    """Drop every in-memory cache object (the files stay): the next use recomputes the
    environment, reads the files again, and reports a problem with them again."""
    global _static_env
    with _caches_lock:
        _caches.clear()
        _static_env = None
    with _warn_lock:
        _warned.clear()


__all__ = ["TuningCache", "CacheFileError", "current", "cache_dir", "user_cache_dir", "environment", "env_key",
           "files", "clear", "forget", "read_document", "problem_key"]
