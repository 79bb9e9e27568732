"""Progress of a long run: a live line rewritten in place on a terminal, and one line per finished step everywhere
(a CI log or `| tee` gets no carriage returns, only the finished lines)."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.live = stream.isatty()
        self.width = 0

    def update(self, text: str) -> None:
        if self.live:
            self.width = max(self.width, len(text))
            print(f"\r{text:<{self.width}}", end="", file=self.stream, flush=True)

    def finish(self, text: str) -> None:
        prefix = "\r" if self.live else ""
        print(f"{prefix}{text:<{self.width}}", file=self.stream, flush=True)
        self.width = 0
