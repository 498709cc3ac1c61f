"""The dispatcher's settings: its mode and time budget per problem (``FASTCONV_TUNING``,
``FASTCONV_AUTOTUNE``, ``FASTCONV_TUNE_BUDGET_S``; ``set_tuning`` changes them at run time)."""
from __future__ import annotations

import math
import os
import warnings

MODES = ("estimate", "measure", "patient", "frozen")
DEFAULT_BUDGET_S = 10.0


def _warn_env(name: str, value: str, expected: str) -> None:
    warnings.warn(f"fastconv: ignoring {name}={value!r}: expected {expected}", RuntimeWarning, stacklevel=3)


def from_environment() -> tuple[str, float]:
    mode, budget = "measure", DEFAULT_BUDGET_S
    value = os.environ.get("FASTCONV_TUNING")
    if value:
        if value.strip().lower() in MODES:
            mode = value.strip().lower()
        else:
            _warn_env("FASTCONV_TUNING", value, " | ".join(MODES))
    if os.environ.get("FASTCONV_AUTOTUNE", "").strip().lower() in ("0", "false", "no", "off") \
            and mode in ("measure", "patient"):
        mode = "estimate"
    value = os.environ.get("FASTCONV_TUNE_BUDGET_S")
    if value:
        try:
            budget = float(value)
            if not budget >= 0 or math.isinf(budget):
                raise ValueError
        except ValueError:
            _warn_env("FASTCONV_TUNE_BUDGET_S", value, "a non-negative number of seconds")
            budget = DEFAULT_BUDGET_S
    return mode, budget


mode, budget_s = from_environment()  # set_tuning changes them (fastconv/dispatch/choosing.py)


def check(mode, budget_s) -> None:
    """set_tuning's argument checks."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"set_tuning: mode={mode!r} is not one of {', '.join(map(repr, MODES))}")
    if budget_s is not None:
        if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)):
            raise TypeError(f"set_tuning: budget_s={budget_s!r} must be a number of seconds")
        if not 0 <= budget_s < math.inf:
            raise ValueError(f"set_tuning: budget_s={budget_s!r} must be finite and non-negative")
