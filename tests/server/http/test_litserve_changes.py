"""What embedserve changes in LitServe (server/http/litserve_changes.py): a batching loop that blocks instead of
polling, pipe queues read by the event loop, and no gzip unless asked for."""

from __future__ import annotations

import asyncio
import gc
import gzip
import inspect
import queue
import threading
import time
import types
from contextlib import asynccontextmanager

import litserve as ls
import psutil
import pytest
import requests
from litserve.loops.base import _SENTINEL_VALUE, _inject_context, _StopLoopError

from server.http import litserve_changes
from server.http.admission import Admission, BackendLoad, Expired
from server.http.litserve_changes import DrainingBatchLoop, PipeTransport, read_hook_signatures_once
from server.http.pipes import PipeQueue
from server.http.processes import SPAWN
from server.http.schemas import EmbeddingRequest
from tests.helpers import MODEL, start_server


def api(max_batch_size: int = 8, batch_timeout: float = 0.0, request_timeout: float = 30.0, max_queue_wait_ms=0.0):
    return types.SimpleNamespace(
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout,
        request_timeout=request_timeout,
        admission=Admission("onnx", MODEL, BackendLoad.create(), max_queue_wait_ms),
    )


def request(uid: str, age: float = 0.0) -> tuple:
    return (0, uid, time.monotonic() - age, {"input": uid})


def test_the_loop_takes_everything_already_queued_up_to_the_batch_size():
    requests_queue: queue.Queue = queue.Queue()
    for number in range(11):
        requests_queue.put(request(f"r{number}"))
    batch, timed_out = DrainingBatchLoop().get_batch_requests(api(max_batch_size=8), requests_queue, None)
    assert [uid for _, uid, _ in batch] == [f"r{n}" for n in range(8)] and timed_out == []
    batch, _ = DrainingBatchLoop().get_batch_requests(api(max_batch_size=8), requests_queue, None)
    assert [uid for _, uid, _ in batch] == ["r8", "r9", "r10"]


def test_a_request_that_waited_past_the_timeout_is_set_apart_and_the_sentinel_stops_the_loop():
    requests_queue: queue.Queue = queue.Queue()
    requests_queue.put(request("stale", age=5.0))
    requests_queue.put(request("fresh"))
    batch, timed_out = DrainingBatchLoop().get_batch_requests(api(request_timeout=1.0), requests_queue, None)
    assert [uid for _, uid, _ in batch] == ["fresh"] and timed_out == [(0, "stale")]
    requests_queue.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        DrainingBatchLoop().get_batch_requests(api(), requests_queue, None)


def test_a_request_that_waited_past_the_queue_wait_bound_reaches_decode_as_expired_not_timed_out():
    requests_queue: queue.Queue = queue.Queue()
    requests_queue.put(request("late", age=0.8))
    requests_queue.put(request("stale", age=5.0))
    requests_queue.put(request("fresh"))
    batch, timed_out = DrainingBatchLoop().get_batch_requests(
        api(request_timeout=3.0, max_queue_wait_ms=500), requests_queue, None
    )
    assert timed_out == []  # past both bounds: the queue-wait one answers first (503, not 504)
    late, stale, fresh = (payload for _, _, payload in batch)
    assert isinstance(late, Expired) and late.waited >= 0.8 and late.request == {"input": "late"}
    assert isinstance(stale, Expired) and fresh == {"input": "fresh"}


def test_a_batch_stops_at_its_cost_budget_and_the_request_past_it_opens_the_next():
    requests_queue: queue.Queue = queue.Queue()
    for number, cost in enumerate([300, 500, 400, 100]):
        requests_queue.put((0, f"r{number}", time.monotonic(), types.SimpleNamespace(cost=cost)))
    loop, budget = DrainingBatchLoop(), api()
    budget.max_batch_cost = 1000
    batch, _ = loop.get_batch_requests(budget, requests_queue, None)
    assert [uid for _, uid, _ in batch] == ["r0", "r1"]  # r2 would make 1200
    batch, _ = loop.get_batch_requests(budget, requests_queue, None)
    assert [uid for _, uid, _ in batch] == ["r2", "r3"] and requests_queue.empty()
    requests_queue.put((0, "huge", time.monotonic(), types.SimpleNamespace(cost=5000)))
    batch, _ = loop.get_batch_requests(budget, requests_queue, None)
    assert [uid for _, uid, _ in batch] == ["huge"]  # a request over the budget alone still runs


def test_the_loop_waits_for_more_only_with_a_batch_timeout(monkeypatch):
    monkeypatch.setattr(litserve_changes, "IDLE_WAKE_SECONDS", 0.05)
    assert DrainingBatchLoop().get_batch_requests(api(), queue.Queue(), None) == ([], [])

    def late_arrival(timeout: float) -> list[str]:
        requests_queue: queue.Queue = queue.Queue()
        requests_queue.put(request("first"))
        threading.Timer(0.05, requests_queue.put, args=(request("late"),)).start()
        batch, _ = DrainingBatchLoop().get_batch_requests(api(batch_timeout=timeout), requests_queue, None)
        time.sleep(0.1)  # let the timer fire before the queue goes away
        return [uid for _, uid, _ in batch]

    assert late_arrival(0.0) == ["first"]
    assert late_arrival(2.0) == ["first", "late"]


class HookedAPI(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request["input"]

    def predict(self, inputs, context):
        context["seen"] = inputs
        return [text.upper() for text in inputs]

    def encode_response(self, output):
        return {"output": output}


def test_hook_signatures_are_read_once_and_litserve_still_passes_context_only_where_taken():
    lit_api = HookedAPI(max_batch_size=4)
    before = {name: inspect.signature(getattr(lit_api, name)) for name in litserve_changes.LOOP_HOOKS}
    read_hook_signatures_once(lit_api)
    for name in litserve_changes.LOOP_HOOKS:
        hook = getattr(lit_api, name)
        assert inspect.signature(hook) is hook.__signature__ == before[name]  # not read again
    context = {}
    decoded = _inject_context(context, lit_api.decode_request, {"input": "a"})
    assert _inject_context(context, lit_api.predict, [decoded, "b"]) == ["A", "B"]
    assert context == {"seen": ["a", "b"]}
    assert _inject_context(context, lit_api.encode_response, "A") == {"output": "A"}


def test_pipe_transport_hands_every_response_to_the_event_loop_in_order():
    responses = PipeQueue(SPAWN)
    transport = PipeTransport(None, [responses])
    for number in range(50):
        responses.put(("uid", number))

    async def receive() -> list:
        return [await asyncio.wait_for(transport.areceive(0), timeout=10) for _ in range(50)]

    assert [number for _, number in asyncio.run(receive())] == list(range(50))


@pytest.mark.slow
def test_an_idle_server_blocks_instead_of_polling_and_answers_without_gzip(server):
    """LitServe's polling loop woke every worker a thousand times a second; an idle worker sleeps in a blocking read
    (a few wake-ups a second: its memory sampler and the idle check)."""
    body = {"model": MODEL, "input": ["a text long enough to be worth compressing"] * 8}
    answer = requests.post(f"{server.url}/onnx/v1/embeddings", json=body, headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200 and "content-encoding" not in answer.headers
    time.sleep(2)
    workers = [p for p in psutil.Process(server.process.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    workers = [p for p in workers if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) == 3, "torch, onnx, openvino"
    before = [p.num_ctx_switches().voluntary for p in workers]
    time.sleep(3)
    wakeups = [(p.num_ctx_switches().voluntary - b) / 3 for p, b in zip(workers, before, strict=True)]
    assert all(rate < 50 for rate in wakeups), f"voluntary context switches per second: {wakeups}"


@pytest.mark.slow
def test_gzip_when_asked_for(exported, tmp_path):
    server = start_server(exported, tmp_path, "--backends", "onnx", "--gzip-responses")
    try:
        body = {"model": MODEL, "input": ["a text long enough to be worth compressing"] * 8}
        url = f"{server.url}/onnx/v1/embeddings"
        zipped = requests.post(url, json=body, headers={"Accept-Encoding": "gzip"}, stream=True)
        raw = zipped.raw.read(decode_content=False)
        plain = requests.post(url, json=body, headers={"Accept-Encoding": "identity"})
    finally:
        server.stop()
    assert zipped.headers["content-encoding"] == "gzip" and len(raw) < len(plain.content)
    assert gzip.decompress(raw) == plain.content


def test_the_worker_gives_freed_heap_back_from_its_sampler_not_after_every_batch(monkeypatch):
    from server.http import embeddings_api
    from server.http.admission import BackendLoad
    from server.http.status import BackendStatus
    from server.metrics import server_metrics
    from server.settings import ServeSettings

    trims = []
    monkeypatch.setattr(embeddings_api, "_malloc_trim", trims.append)
    api = embeddings_api.EmbeddingAPI(ServeSettings(), "onnx", BackendStatus.create(), BackendLoad.create())
    api.metrics = server_metrics()
    api._sample_worker()  # what the worker's sampler thread calls every second, loaded or not
    assert trims == [0]


@pytest.fixture
def restored_garbage_collector():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_an_http_process_settles_its_garbage_collector_before_litserve_starts_serving(
    monkeypatch, restored_garbage_collector
):
    seen = []

    @asynccontextmanager
    async def litserve_lifespan(self, app):
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
        yield

    monkeypatch.setattr(litserve_changes.ls.LitServer, "lifespan", litserve_lifespan)
    gc.unfreeze()

    async def start_and_stop() -> None:
        async with litserve_changes.EmbeddingServer.lifespan(object.__new__(litserve_changes.EmbeddingServer), None):
            pass

    asyncio.run(start_and_stop())
    ((threshold, frozen),) = seen
    assert threshold == litserve_changes.GC_YOUNG_THRESHOLD and frozen > 0


@pytest.mark.slow
def test_a_loaded_worker_settles_its_garbage_collector_and_its_batches_leave_the_heap_to_the_sampler(
    exported, restored_garbage_collector, monkeypatch
):
    from server.http import embeddings_api
    from server.http.admission import BackendLoad
    from server.http.status import BackendStatus
    from server.settings import ServeSettings

    gc.unfreeze()
    settings = ServeSettings(cache=exported, allow_export=False)
    api = embeddings_api.EmbeddingAPI(settings, "onnx", BackendStatus.create(), BackendLoad.create())
    assert gc.get_freeze_count() == 0
    api.setup("cpu")
    assert api.embedder is not None, api.status.detail()
    assert gc.get_threshold()[0] == litserve_changes.GC_YOUNG_THRESHOLD and gc.get_freeze_count() > 0
    trims = []
    monkeypatch.setattr(embeddings_api, "_malloc_trim", trims.append)
    jobs = [api.decode_request(EmbeddingRequest(model=MODEL, input=["one text", "and another"])) for _ in range(3)]
    answers = [api.encode_response(job) for job in api.embed_jobs(jobs)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert trims == [], "a batch gives no heap back itself: the worker's sampler does, once a second"
