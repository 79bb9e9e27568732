"""The metric set itself: names and units by Prometheus' conventions, and what one batch records."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from server.engine.embedder import ForwardPass, ForwardStats
from server.metrics import LATENCY_BUCKETS, NvmlCollector, render_metrics, server_metrics


def families():
    metrics = server_metrics()
    return {m._name: m for m in vars(metrics).values() if hasattr(m, "_name")}


def test_names_follow_prometheus_conventions():
    for name, metric in families().items():
        assert name.startswith("embedserve_"), name
        kind = metric._type
        if kind == "counter":
            assert not name.endswith("_total"), f"{name}: prometheus_client appends _total itself"
        if name.endswith("_seconds") and kind == "histogram":
            assert metric._upper_bounds[:-1] == list(LATENCY_BUCKETS), name
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 10.0


def test_one_batch_records_requests_passes_inputs_tokens_and_padding():
    labels = {"backend": "unit-test", "model": "m"}
    before = REGISTRY.get_sample_value("embedserve_inputs_total", labels) or 0.0
    stats = ForwardStats(
        [
            ForwardPass(inputs=3, real_tokens=30, padded_tokens=40, seconds=0.01),
            ForwardPass(inputs=1, real_tokens=8, padded_tokens=8, seconds=0.002),
        ]
    )
    server_metrics().observe_batch("unit-test", "m", waits=[0.004, 0.02], stats=stats, inference_seconds=0.013)

    value = lambda name, **extra: REGISTRY.get_sample_value(name, {**labels, **extra})  # noqa: E731
    assert value("embedserve_inputs_total") - before == 4
    assert value("embedserve_tokens_total") == 38
    assert value("embedserve_batch_requests_sum") == 2 and value("embedserve_batch_requests_count") == 1
    assert value("embedserve_forward_inputs_count") == 2
    assert value("embedserve_forward_inputs_bucket", le="2.0") == 1  # the pass of 1 input, not the pass of 3
    assert value("embedserve_forward_tokens_sum") == 48
    assert value("embedserve_forward_padding_ratio_sum") == pytest.approx(0.25)
    assert value("embedserve_queue_wait_seconds_bucket", le="0.005") == 1
    assert value("embedserve_queue_wait_seconds_bucket", le="0.025") == 2
    assert value("embedserve_forward_duration_seconds_sum") == pytest.approx(0.012)


def test_response_counts_by_code_and_times_by_status_class():
    metrics = server_metrics()
    metrics.observe_response("unit-test", "m", 503, 0.002)
    metrics.observe_response("unit-test", "m", 200, 0.3)
    labels = {"backend": "unit-test", "model": "m"}
    assert REGISTRY.get_sample_value("embedserve_requests_total", {**labels, "code": "503"}) == 1
    assert (
        REGISTRY.get_sample_value("embedserve_request_duration_seconds_count", {**labels, "status_class": "5xx"}) == 1
    )
    assert (
        REGISTRY.get_sample_value(
            "embedserve_request_duration_seconds_bucket", {**labels, "status_class": "2xx", "le": "0.25"}
        )
        == 0
    )


def test_process_sample_is_this_process_rss_and_cpu_time():
    import psutil

    sum(i * i for i in range(2_000_000))  # some CPU time to see
    server_metrics().sample_process("worker", "unit-test", "m")
    labels = {"role": "worker", "backend": "unit-test", "model": "m"}
    rss = REGISTRY.get_sample_value("embedserve_process_resident_memory_bytes", labels)
    assert rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)
    cpu = REGISTRY.get_sample_value("embedserve_process_cpu_seconds", labels)
    times = psutil.Process().cpu_times()
    assert 0.05 < cpu <= times.user + times.system


def test_gpu_metrics_are_absent_without_a_gpu():
    if NvmlCollector()._nvml is not None:
        pytest.skip("an NVIDIA driver answers here; the GPU tests cover this host")
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    assert b"embedserve_gpu_" not in body
    assert b"embedserve_inputs_total" in body
