"""Progress output: a live line on a terminal; without one (CI logs, `| tee`) only one line per finished step."""

from __future__ import annotations

import io
import typing

import pytest
from pydantic import ValidationError

from corpus.texts import PROFILES, TextProfile
from loadtest.settings import BenchSettings, SoakSettings, SweepSettings
from loadtest.sweep.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_each_finished_step_is_one_line_and_nothing_else():
    stream = io.StringIO()
    progress = Progress(stream)
    for step in range(3):
        for second in range(50):
            progress.update(f"step {step} at {second} s")
        progress.finish(f"step {step} done")
    assert "\r" not in stream.getvalue()
    assert stream.getvalue().splitlines() == ["step 0 done", "step 1 done", "step 2 done"]


def test_on_a_terminal_the_live_line_is_rewritten_in_place_and_finished_lines_stay():
    stream = Terminal()
    progress = Progress(stream)
    progress.update("a long live line at first")
    progress.update("short")
    progress.finish("done")
    lines = stream.getvalue().split("\n")
    assert lines[0].count("\r") == 3 and lines[0].endswith("done" + " " * (len("a long live line at first") - 4))
    assert lines[1] == ""


def test_bench_sweep_and_soak_offer_the_same_text_profiles():
    assert set(PROFILES) == set(typing.get_args(TextProfile))
    everything = list(PROFILES)
    assert BenchSettings(profiles=everything).profiles == everything
    assert SweepSettings(profiles=everything).profiles == everything
    assert [SoakSettings(profile=name).profile for name in everything] == everything
    for make in (lambda: BenchSettings(profiles=["tiny"]), lambda: SweepSettings(profiles=["tiny"])):
        with pytest.raises(ValidationError):
            make()
    with pytest.raises(ValidationError):
        SoakSettings(profile="tiny")
