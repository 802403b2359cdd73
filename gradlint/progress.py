"""A progress line on stderr for long runs: `checked 1,234/18,121 files`, rewritten in place with `\\r`.

Shown only where a person watches: stderr is a terminal, TERM is not `dumb`, and neither pre-commit
(`PRE_COMMIT`, which runs hooks on a pseudo-terminal when colour is on) nor CI (`CI`) runs us. It appears
only once a run has taken more than a second, so quick runs never flicker, and it is erased before any
other output, so it never mixes with the report or the messages. NO_COLOR does not turn it off: it is
not colour. GRADLINT_NO_PROGRESS=1 does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

DELAY_S = 1.0
INTERVAL_S = 0.1


def wanted(stream: TextIO) -> bool:
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
    env = os.environ
    return (tty and env.get("TERM") != "dumb" and not env.get("PRE_COMMIT") and not env.get("CI")
            and env.get("GRADLINT_NO_PROGRESS", "").strip().lower() in ("", "0", "false", "no"))


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None,
                 delay: float | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = wanted(self.stream) if enabled is None else enabled
        self.done = 0
        self._start = time.monotonic()
        self._delay = DELAY_S if delay is None else delay
        self._last_draw = 0.0
        self._width = 0  # of the line on screen, to erase it

    def advance(self) -> None:
        self.done = min(self.done + 1, self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self._delay or (now - self._last_draw < INTERVAL_S and self.done < self.total):
            return
        self._last_draw = now
        self._draw(f"checked {self.done:,}/{self.total:,} files")

    def _draw(self, text: str) -> None:
        try:
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False
            return
        self._width = max(self._width, len(text))

    def close(self) -> None:
        """Erase the line (only if one was drawn), leaving the cursor at the start of it."""
        if self._width:
            try:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._width = 0
