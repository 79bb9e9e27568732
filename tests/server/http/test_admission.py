"""Admission by expected wait: the estimate (queued estimated tokens over measured throughput), early rejection with
503 server_overloaded and Retry-After, the in-queue timeout, and the metrics that count them by reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from corpus.texts import texts
from loadtest.probe.metrics_scrape import MetricsSnapshot
from server.http.admission import RATE_SMOOTHING, BackendLoad, estimated_tokens, retry_after
from tests.helpers import MODEL, start_server


def test_a_request_costs_its_characters_over_four_plus_two_cut_at_the_model_limit():
    assert estimated_tokens(["a" * 40]) == 12
    assert estimated_tokens(["a" * 40, "b" * 4000]) == 12 + 1002
    assert estimated_tokens(["a" * 40, "b" * 4000], max_tokens=256) == 12 + 256
    assert estimated_tokens([[101, 7, 8, 102]], max_tokens=256) == 4  # token ids count as they are


def test_the_wait_is_the_queued_work_over_the_measured_throughput():
    load = BackendLoad.create()
    assert load.expected_wait(1000) is None  # nothing measured yet: no estimate, nothing shed by it
    load.record_batch(tokens=2000, seconds=1.0)
    assert load.tokens_per_second == 2000
    load.admit(3000)
    load.admit(1000)
    assert load.expected_wait(1000) == pytest.approx(2.5)  # (3000 + 1000 + 1000) / 2000
    load.release(3000)
    assert load.expected_wait() == pytest.approx(0.5)
    load.record_batch(tokens=1000, seconds=1.0)  # slower now: the estimate follows, smoothed
    assert load.tokens_per_second == pytest.approx((1 - RATE_SMOOTHING) * 2000 + RATE_SMOOTHING * 1000)
    load.release(5000)  # never below zero
    assert load.queued_tokens == 0
    load.set_limits(max_tokens=8, batch_cost=0)
    assert load.cost(["a" * 400]) == 8


def test_admission_leaves_one_batch_of_margin_below_the_bound_at_most_half_of_it():
    load = BackendLoad.create()
    assert load.admission_bound(5.0) == 5.0  # nothing measured
    load.record_batch(tokens=4000, seconds=1.0)
    load.set_limits(max_tokens=256, batch_cost=8000)  # a batch of 2 s at 4000 tokens/s
    assert load.admission_bound(5.0) == pytest.approx(3.0)
    assert load.admission_bound(3.0) == pytest.approx(1.5)  # never below half the bound


def test_the_running_batch_counts_only_for_what_it_has_left():
    load = BackendLoad.create()
    load.record_batch(tokens=1000, seconds=1.0)
    load.admit(3000)  # a running batch of 2000 and 1000 queued behind it
    load.start_batch(2000, now=100.0)
    assert load.expected_wait(now=100.0) == pytest.approx(3.0)
    assert load.expected_wait(now=101.5) == pytest.approx(1.5)  # 1500 of the batch done
    assert load.expected_wait(now=110.0) == pytest.approx(1.0)  # the batch's own cost at most
    load.end_batch()
    assert load.expected_wait(now=110.0) == pytest.approx(3.0)  # until its requests are answered and released


def test_retry_after_says_when_the_queue_should_have_room():
    assert retry_after(wait=6.2, bound=2.0) == "5" and retry_after(wait=2.1, bound=2.0) == "1"


def post(server, body: dict) -> requests.Response:
    return requests.post(f"{server.url}/onnx/v1/embeddings", json=body, timeout=120)


@pytest.mark.slow
def test_past_capacity_requests_are_shed_at_once_and_what_was_admitted_is_served(exported, tmp_path):
    server = start_server(
        exported, tmp_path, "--backends", "onnx", "--max-queue-wait-ms", "300", "--max-batch-requests", "4"
    )
    long_texts = texts("long", 32, seed=5)  # 32 inputs of 256 tokens: hundreds of ms on 2 cores
    big = {"model": MODEL, "input": long_texts}
    try:
        # A fresh server has measured nothing, so it admits a burst; what then waits past 300 ms for its batch is
        # shed before it runs.
        with ThreadPoolExecutor(12) as pool:
            burst = list(pool.map(lambda _: post(server, big), range(12)))
        statuses = [r.status_code for r in burst]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        for response in burst:
            if response.status_code == 200:
                assert len(response.json()["data"]) == 32
            else:
                error = response.json()["error"]
                assert error["code"] == "server_overloaded" and "waited" in error["message"]
                assert int(response.headers["Retry-After"]) >= 1
        # Now the throughput is measured: a second burst is shed up front, by its expected wait.
        with ThreadPoolExecutor(12) as pool:
            second = list(pool.map(lambda _: post(server, big), range(12)))
        early = [r for r in second if r.status_code == 503 and "would wait" in r.json()["error"]["message"]]
        assert early, [r.status_code for r in second]
        assert all(int(r.headers["Retry-After"]) >= 1 for r in early)
        assert all(len(r.json()["data"]) == 32 for r in second if r.status_code == 200)
        metrics = MetricsSnapshot.scrape(server.url)
        rejected = "embedserve_rejected_requests_total"
        assert metrics.total(rejected, backend="onnx", reason="queue_timeout") == statuses.count(503)
        assert metrics.total(rejected, backend="onnx", reason="expected_wait") == len(early)
        assert metrics.total(rejected, backend="onnx", reason="count_bound") == 0
        assert ("embedserve_expected_wait_seconds", frozenset({("backend", "onnx"), ("model", MODEL)})) in (
            metrics.samples
        )
        # Once the queue has drained, the estimate lets a request in again and it is served.
        small = post(server, {"model": MODEL, "input": ["back to normal"]})
        assert small.status_code == 200, small.text
    finally:
        server.stop()


@pytest.mark.slow
def test_max_request_tokens_is_a_400_naming_the_limit_and_the_server_keeps_serving(exported, tmp_path):
    server = start_server(exported, tmp_path, "--backends", "onnx", "--max-request-tokens", "40")
    try:
        over = post(server, {"model": MODEL, "input": ["one two three four five six seven eight nine ten"] * 5})
        assert over.status_code == 400, over.text
        error = over.json()["error"]
        assert error["code"] == "max_tokens_per_request" and "at most 40 allowed" in error["message"]
        within = post(server, {"model": MODEL, "input": ["one two three four five six seven eight nine ten"] * 2})
        assert within.status_code == 200 and within.json()["usage"]["prompt_tokens"] <= 40
    finally:
        server.stop()
