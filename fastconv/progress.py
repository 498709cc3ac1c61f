"""The one-line progress bar of long work on a terminal (``fastconv tune``, ``tune --verify``,
``fastconv bench``): [#####.....] 7/18 conv3_2."""
from __future__ import annotations

import sys


def stream(progress):
    """The stream a bar writes to: the given one, or (None) stderr when it is a terminal; False: none."""
    if progress is None:
        return sys.stderr if sys.stderr is not None and sys.stderr.isatty() else False
    return progress


class Progress:
    """A one-line progress bar on a terminal: [#####.....] 7/18 conv3_2."""

    def __init__(self, stream, total: int):
        self.stream, self.total, self.i = stream, total, 0

    def step(self, label: str) -> None:
        if self.stream:
            filled = 20 * self.i // max(self.total, 1)
            self.stream.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {self.i + 1}/{self.total} {label[:40]:40s}")
            self.stream.flush()
        self.i += 1

    def done(self) -> None:
        if self.stream:
            self.stream.write(f"\r[{'#' * 20}] {self.total}/{self.total} {'done':40s}\n")
            self.stream.flush()
