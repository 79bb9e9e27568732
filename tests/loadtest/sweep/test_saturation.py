"""The saturation search's every stop reason, driven by a model of a server whose limits are known: each load is
answered from its throughput curve, so that the search's decisions, not a real server's noise, are tested."""

from __future__ import annotations

import pytest

from loadtest.settings import SweepSettings
from loadtest.sweep.cells import Cell, CellResult
from loadtest.sweep.saturation import find_max


class ModelServer:
    """Throughput grows with the load up to `capacity` inputs/s; p99 grows with it; beyond `fails_from` users or
    req/s requests fail (or are shed, with `shed`); the open-loop generator falls behind from `generator_limit`."""

    def __init__(self, capacity=400.0, p99_per_load=5.0, fails_from=None, shed=False, generator_limit=None):
        self.capacity, self.p99_per_load = capacity, p99_per_load
        self.fails_from, self.shed, self.generator_limit = fails_from, shed, generator_limit
        self.cells: list[Cell] = []

    def __call__(self, cell: Cell) -> CellResult:
        self.cells.append(cell)
        load = cell.concurrency or cell.rate
        requests = 1000
        failing = 10 if self.fails_from is not None and load >= self.fails_from else 0
        result = CellResult(
            cell.backend,
            cell.profile,
            cell.batch_size,
            concurrency=cell.concurrency,
            rate=cell.rate,
            load="open" if cell.rate else "closed",
            requests=requests,
            failures=0 if self.shed else failing,
            shed=failing if self.shed else 0,
            inputs_per_s=min(self.capacity, 100.0 * load) * cell.batch_size,
            requests_per_s=min(self.capacity, 100.0 * load),
            p99_ms=self.p99_per_load * load,
            generator_behind_pct=5.0 if self.generator_limit and load >= self.generator_limit else 0.0,
        )
        return result


def search(server: ModelServer, **settings) -> dict:
    base = {"backends": ["onnx"], "batch_sizes": [1], "profiles": ["short"], "slo_ms": 100.0}
    (found,) = find_max(server, SweepSettings(**{**base, **settings}), lambda result: None)
    return vars(found)


def test_users_stop_when_p99_breaks_the_slo():
    found = search(ModelServer(capacity=10_000, p99_per_load=10), max_concurrency=64)
    assert found["tried"] == [1, 2, 4, 8, 16] and found["best_concurrency"] == 8
    assert found["stopped_because"] == "p99 160 ms above the SLO at 16 users"


def test_users_stop_when_requests_fail_or_are_shed():
    failing = search(ModelServer(capacity=10_000, p99_per_load=1, fails_from=4), max_concurrency=64)
    assert failing["tried"] == [1, 2, 4] and failing["best_concurrency"] == 2
    assert failing["stopped_because"] == "10 failed and 0 shed requests at 4 users"
    shedding = search(ModelServer(capacity=10_000, p99_per_load=1, fails_from=4, shed=True), max_concurrency=64)
    assert shedding["stopped_because"] == "0 failed and 10 shed requests at 4 users"


def test_users_stop_when_throughput_stops_rising():
    found = search(ModelServer(capacity=400, p99_per_load=1), max_concurrency=64)
    assert found["tried"] == [1, 2, 4, 8] and found["best_concurrency"] == 4  # 8 users: no more than 4 gave
    assert found["stopped_because"] == "throughput stopped rising at 8 users"


def test_users_stop_at_the_maximum_asked_for():
    found = search(ModelServer(capacity=10_000, p99_per_load=1), max_concurrency=4)
    assert found["tried"] == [1, 2, 4] and found["stopped_because"] == "reached --max-concurrency 4"


def test_rates_double_until_the_slo_breaks_then_bisect_twice():
    found = search(ModelServer(capacity=10_000, p99_per_load=1), rates=[10], max_rate=1000)
    # 10, 20, 40, 80 hold (p99 = rate ms); 160 breaks; then 120 breaks, 100 holds
    assert found["tried"] == [10, 20, 40, 80, 160, 120, 100]
    assert found["best_rate"] == 100 and found["stopped_because"] == "p99 120 ms above the SLO at 120 req/s"


@pytest.mark.parametrize(
    "server, reason",
    [
        (ModelServer(capacity=10_000, p99_per_load=0.1, fails_from=40), "10 of 1000 requests failed and 0 were shed"),
        (ModelServer(capacity=10_000, p99_per_load=0.1, fails_from=40, shed=True), "0 of 1000 requests failed and 10"),
        (ModelServer(capacity=10_000, p99_per_load=0.1, generator_limit=40), "the generator fell 5.0% behind"),
    ],
)
def test_rates_stop_on_failures_shedding_or_a_generator_behind(server, reason):
    found = search(server, rates=[10], max_rate=1000)
    assert found["tried"] == [10, 20, 40, 30, 35] and found["best_rate"] == 35  # 40 fails; 30 and 35 hold
    assert found["stopped_because"].startswith(reason) and found["stopped_because"].endswith("at 40 req/s")


def test_a_first_rate_that_does_not_hold_is_halved_until_one_does():
    found = search(ModelServer(capacity=10_000, p99_per_load=1), rates=[400], max_rate=1000)
    assert found["tried"][:3] == [400, 200, 100] and found["best_rate"] >= 50
    assert found["tried"][3:] and all(50 <= rate < 200 for rate in found["tried"][3:])  # then the gap is bisected
