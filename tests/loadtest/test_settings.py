"""The load tools' command lines as the README writes them."""

from __future__ import annotations

from pydantic_settings import CliApp

from loadtest.settings import SoakSettings, SweepSettings
from loadtest.sweep.run import grid


def test_switches_need_no_value_and_rates_make_an_open_loop_grid():
    settings = CliApp.run(
        SweepSettings,
        cli_args=["--find-max", "--generator-capacity", "--rates", "20,40", "--arrival", "constant", "--slo-ms", "50"],
    )
    assert settings.find_max and settings.generator_capacity
    assert (settings.rates, settings.arrival, settings.slo_ms) == ([20, 40], "constant", 50)


def test_rates_alone_sweep_open_loop_and_with_concurrency_both():
    shape = ["--backends", "onnx", "--batch-sizes", "1", "--profiles", "short"]
    open_only = grid(CliApp.run(SweepSettings, cli_args=[*shape, "--rates", "20,40"]))
    assert [(cell.rate, cell.concurrency) for cell in open_only] == [(20, 0), (40, 0)]
    both = grid(CliApp.run(SweepSettings, cli_args=[*shape, "--rates", "20", "--concurrency", "4"]))
    assert [(cell.rate, cell.concurrency) for cell in both] == [(None, 4), (20, 0)]
    closed = grid(CliApp.run(SweepSettings, cli_args=shape))
    assert [cell.concurrency for cell in closed] == [1, 4, 16, 64] and not any(cell.open_loop for cell in closed)


def test_soak_reads_durations_and_rates():
    settings = CliApp.run(SoakSettings, cli_args=["--rate", "2.5", "--duration", "10m", "--warmup", "1m"])
    assert (settings.rate, settings.duration, settings.warmup) == (2.5, 600, 60)
