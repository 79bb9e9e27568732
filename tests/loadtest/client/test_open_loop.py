"""The open-loop generator against the echo server: arrivals follow the clock, never early; a generator that cannot
keep its schedule is detected; latency counts from the due time; exact percentiles; the rate search."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest

from loadtest.client.arrivals import arrival_times
from loadtest.client.http_load import OpenLoopResult, Outcome, open_loop
from loadtest.client.latency import LatencySummary, percentile
from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.saturation import find_max


def echoed(bodies):
    return lambda index, status, body: None if status == 200 and body == bodies[index] else f"HTTP {status}"


def test_constant_arrivals_are_evenly_spaced_over_the_window():
    times = arrival_times(40, 2.5, "constant")
    assert len(times) == 100 and times[0] == 0
    assert all(b - a == pytest.approx(1 / 40) for a, b in itertools.pairwise(times))
    assert times[-1] < 2.5


def test_poisson_arrivals_have_the_rate_on_average_and_repeat_with_their_seed():
    times = arrival_times(200, 20, "poisson", seed=3)
    # 4000 expected, standard deviation ~63: five of them either side.
    assert abs(len(times) - 4000) < 5 * math.sqrt(4000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.05)
    # exponential gaps: about 1/e of them longer than the mean (a constant schedule would have none)
    assert sum(gap > 1 / 200 for gap in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.03)
    assert times == sorted(times) and times[-1] < 20
    assert arrival_times(200, 20, "poisson", seed=3) == times != arrival_times(200, 20, "poisson", seed=4)


def test_requests_leave_at_their_due_time_never_early_and_every_answer_is_checked(echo_url):
    schedule = arrival_times(100, 1.0, "constant")
    bodies = [b'{"n": %d}' % n for n in range(len(schedule))]
    started = time.perf_counter()
    result = open_loop(echo_url, schedule, 1.0, lambda i: ("/echo", bodies[i]), echoed(bodies))
    wall = time.perf_counter() - started
    assert len(result.outcomes) == 100 and len(result.passed) == 100 and result.failures == {}
    assert all(o.begun >= o.due for o in result.outcomes), "a request left before it was due"
    # the last one was due at 0.99 s: the run lasted at least that long, on the clock
    assert wall >= 0.99 and result.outcomes[-1].begun >= 0.99
    assert all(o.latency >= o.finished - o.begun > 0 for o in result.outcomes)
    assert result.offered_rate == pytest.approx(100)


def test_a_generator_that_cannot_keep_its_schedule_says_so_and_its_lag_counts_in_latency(echo_url):
    schedule = arrival_times(200, 1.0, "constant")
    bodies = [b"{}"] * len(schedule)

    def slow_check(index, status, body):
        time.sleep(0.02)  # blocks the generator's event loop: at most 50 answers a second are read
        return None

    result = open_loop(echo_url, schedule, 1.0, lambda i: ("/echo", bodies[i]), slow_check)
    assert result.behind_pct > 1, "the lag went unnoticed"
    late = max(result.outcomes, key=lambda o: o.lag)
    assert late.latency >= late.lag > 0.01
    # the achieved rate is what was answered, not what was asked
    assert result.rate_within() < 0.5 * result.offered_rate


def test_a_stall_shorter_than_the_gap_between_arrivals_is_jitter_but_a_backlog_is_the_generator_falling_behind():
    def run(lags):
        # 8 arrivals in 2 s, one every 250 ms, each begun `lag` seconds late
        return OpenLoopResult(2.0, [Outcome(due=0.25 * i, begun=0.25 * i + lag) for i, lag in enumerate(lags)])

    assert run([0.0] * 8).behind_pct == 0.0
    # one 30 ms stall (1.5% of the span) with nothing queued behind it: the rate was not limited
    stalled = run([0, 0, 0, 0.03, 0, 0, 0, 0])
    assert stalled.max_lag == pytest.approx(0.03) and stalled.behind_pct == 0.0 and stalled.kept_schedule
    # a lag that grows past one gap: requests waited behind each other
    backlog = run([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35])
    assert backlog.behind_pct == pytest.approx(17.5) and not backlog.kept_schedule


def test_failures_are_counted_by_reason_and_goodput_counts_only_answers_within_the_slo(echo_url):
    schedule = arrival_times(50, 0.4, "constant")
    result = open_loop(echo_url, schedule, 0.4, lambda i: ("/busy" if i % 2 else "/echo", b"{}"), echoed([b"{}"] * 20))
    assert result.failures == {"HTTP 503": 10} and len(result.passed) == 10
    assert result.rate_within(slo_seconds=0.0) == 0 < result.rate_within(slo_seconds=10.0) == result.rate_within()


def test_a_keep_alive_connection_the_server_closed_while_idle_is_replaced_not_failed(echo_url):
    schedule = [0.0, 0.1, 0.2]  # each after the last answer: each finds the connection the server closed
    result = open_loop(echo_url, schedule, 0.3, lambda i: ("/close", b"{}"), echoed([b"{}"] * 3))
    assert result.failures == {} and len(result.passed) == 3


def test_unanswered_requests_fail_with_a_reason_after_the_grace_period():
    # a port nobody listens on: every connection is refused
    result = open_loop("http://127.0.0.1:9", [0.0, 0.01], 0.02, lambda i: ("/", b"{}"), lambda *_: None, grace=1)
    assert result.passed == [] and sum(result.failures.values()) == 2
    assert all(reason.startswith("connection:") for reason in result.failures)


def test_percentiles_are_exact_nearest_rank_samples():
    summary = LatencySummary.of(float(ms) for ms in range(1000, 0, -1))
    assert (summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.p999_ms, summary.max_ms) == (
        500,
        900,
        990,
        999,
        1000,
    )
    assert summary.mean_ms == 500.5 and summary.count == 1000
    rng = random.Random(7)
    sample = sorted(rng.lognormvariate(3, 1) for _ in range(997))
    for pct in (50, 90, 99, 99.9):
        value = percentile(sample, pct)
        # the definition: the smallest sample with at least pct% of the samples at or below it
        assert value in sample
        assert sum(x <= value for x in sample) >= pct / 100 * len(sample)
        assert sum(x < value for x in sample) < pct / 100 * len(sample)
    assert LatencySummary.of([]) is None


def model_server(capacity: float):
    """A stand-in for run_cell: p99 is fine up to `capacity` requests a second, then the queue grows."""

    def run_cell(cell: Cell) -> CellResult:
        result = CellResult(cell.backend, cell.profile, cell.batch_size, rate=cell.rate, load="open")
        result.requests, result.generator_behind_pct = 1000, 0.0
        result.requests_per_s = min(cell.rate, capacity)
        result.inputs_per_s = result.requests_per_s * cell.batch_size
        result.p99_ms = 20.0 if cell.rate <= capacity else 900.0
        return result

    return run_cell


def test_rate_search_doubles_then_bisects_to_the_highest_rate_within_the_slo():
    seen = []
    settings = SweepSettings(backends=["onnx"], profiles=["short"], batch_sizes=[4], rates=[5], slo_ms=100)
    (search,) = find_max(model_server(37.0), settings, seen.append)
    assert search.tried == [5, 10, 20, 40, 30, 35]
    assert search.best_rate == 35 and search.best_inputs_per_s == 140 and search.load == "open"
    assert "p99 900 ms above the SLO at 40 req/s" in search.stopped_because
    assert [r.rate for r in seen] == search.tried


def test_rate_search_halves_when_the_first_rate_is_already_too_much():
    settings = SweepSettings(backends=["torch"], profiles=["short"], batch_sizes=[1], rates=[20], slo_ms=100)
    (search,) = find_max(model_server(7.0), settings, lambda result: None)
    assert search.tried == [20, 10, 5, 7.5, 6.25]
    assert search.best_rate == 6.25 and "at 7.5 req/s" in search.stopped_because
