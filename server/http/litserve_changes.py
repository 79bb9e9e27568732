"""LitServe as embedserve runs it: the same server, with these documented changes that make its own overhead nearly
free, so that a served comparison measures the frameworks and not the server (tested in
tests/server/http/test_litserve_changes.py):

1. `DrainingBatchLoop`: LitServe's batched loop polls its request queue every millisecond, idle or not, which costs
   an idle server a large share of a small machine. This loop blocks until a request arrives, then takes what is already
   queued, and waits for more only up to `batch_timeout`: requests that arrive while a batch runs form the next one,
   continuously, as TEI batches.
2. Pipe queues: LitServe passes requests and responses through `multiprocessing.Manager` queues, where every put and
   get is a round trip through the manager process. `EmbeddingServer` uses pipe queues (server/http/pipes.py), whose
   small messages are written by the caller itself rather than by a feeder thread; the manager keeps only the rarely
   touched worker-status dict and shutdown event.
3. Responses are read by the HTTP process's event loop itself when their pipe is readable (`PipeTransport`), not by a
   new thread-pool task per response as LitServe's transport does.
4. No gzip by default: LitServe gzips every response over 1 kB at level 9 for clients that accept it (the OpenAI SDK
   does), which for 32 embeddings costs more CPU in the HTTP process than the forward pass. `--gzip-responses` turns
   it back on, at level 1.
5. Admission (server/http/admission.py): the route asks the LitAPI's `admission` to `admit` each parsed request
   before it is queued, and to `release` it once answered; and the batching loop hands each request it takes to
   `admission.expire_late`, so that one that waited past the wait bound before its batch starts reaches
   `decode_request` as `Expired`, to be answered 503, not run.
6. The garbage collector, once an HTTP process or a worker has started (`settle_garbage_collector`): what it loaded
   is frozen out of the collector's traversals, and young objects are collected less often.
7. Hook signatures read once (`read_hook_signatures_once`): LitServe's loops call `inspect.signature` on every hook
   call, to see whether the hook takes a `context`.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
from contextlib import asynccontextmanager
from multiprocessing.managers import SyncManager
from queue import Empty, Queue
from typing import Any

import litserve as ls
from fastapi import Depends
from litserve.callbacks.base import EventTypes
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.server import RegularRequestHandler
from litserve.transport.process_transport import MPQueueTransport
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from server.http.admission import Expired
from server.http.pipes import MessageReader, PipeQueue
from server.http.processes import SPAWN
from server.metrics import start_process_sampler

# The upstream code these changes copy, replace or rely on the shape of, each with the sha256 (first 16 hex digits)
# of its source in the LitServe that pyproject.toml pins, and what here depends on it. An upgrade that changes one
# fails tests/server/http/test_litserve_contract.py, naming what to re-merge.
UPSTREAM_SOURCES = {
    "litserve.server.LitServer._register_api_endpoints": (
        "df52ecfb1cd8b261",
        "copied with admission added: EmbeddingServer._register_api_endpoints",
    ),
    "litserve.server.LitServer._init_manager": (
        "ec955dbe647ca5b4",
        "copied with pipe queues: EmbeddingServer._init_manager",
    ),
    "litserve.loops.base.collate_requests": (
        "5453b1085a2ec251",
        "replaced, sentinel and request timeout kept: DrainingBatchLoop.get_batch_requests",
    ),
    "litserve.server.BaseRequestHandler._submit_request": (
        "a331d2b69435202e",
        "the queue item it puts, (response queue id, uid, monotonic time, payload): DrainingBatchLoop._take",
    ),
    "litserve.transport.process_transport.MPQueueTransport.areceive": (
        "4f85a66e46f787bd",
        "replaced by a reader in the event loop: PipeTransport.areceive",
    ),
    "litserve.server.LitServer.lifespan": (
        "6e72c5b311ccd68c",
        "wrapped to settle the garbage collector first: EmbeddingServer.lifespan",
    ),
}
# A blocked worker wakes this often with nothing to do, to notice a shutdown that did not reach its queue.
IDLE_WAKE_SECONDS = 1.0
# Net container allocations between two collections of the young generation. At Python's default of 700, the HTTP
# process collected every few requests under single-text load, each time traversing what the requests in flight
# hold. Under that load this many is never reached; the price is that cyclic garbage (rare here) waits for at most
# this many allocations before it is freed.
GC_YOUNG_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """For a server process that has finished starting: what it has loaded lives as long as it does, so the
    collector stops traversing it (gc.freeze: a list splice, which touches no object and so copies no page that a
    forked process shares), and it collects young objects less often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


# The LitAPI hooks that LitServe's batched loop calls: decode and encode once per request, the rest once per batch.
LOOP_HOOKS = ("decode_request", "batch", "predict", "unbatch", "encode_response")


class KnownSignature:
    """A hook with its signature taken once. inspect.signature returns an object's own `__signature__` at once, where
    reading a bound method's costs several times more, and LitServe's loops ask on every hook call (two per
    request)."""

    def __init__(self, hook: Any):
        self.hook = hook
        self.__signature__ = inspect.signature(hook)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.hook(*args, **kwargs)


def read_hook_signatures_once(lit_api: ls.LitAPI) -> None:
    """For a worker's LitAPI, in its setup: the hooks its loop calls become `KnownSignature`s (the HTTP process,
    which reads decode_request's annotation to build the route, keeps the methods as they are)."""
    for name in LOOP_HOOKS:
        setattr(lit_api, name, KnownSignature(getattr(lit_api, name)))


class DrainingBatchLoop(BatchedLoop):
    def __init__(self):
        super().__init__()
        self._held: tuple | None = None  # a request that did not fit the last batch's cost budget: the next one's first

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Queue, transport) -> tuple[list, list]:
        """Blocks for the first request; then takes what is queued, waiting at most `batch_timeout` for more, up to
        `max_batch_size` requests and, when the LitAPI sets `max_batch_cost`, up to that many estimated tokens (the
        request that would pass it opens the next batch)."""
        batch: list = []
        timed_out: list = []
        if self._held is not None:
            first, self._held = self._held, None
        else:
            try:
                first = request_queue.get(timeout=IDLE_WAKE_SECONDS)
            except Empty:
                return batch, timed_out
        self._take(lit_api, first, batch, timed_out)
        budget = getattr(lit_api, "max_batch_cost", None)
        cost = self._cost(batch)
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(batch) + len(timed_out) < lit_api.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                break
            taken = len(batch)
            self._take(lit_api, item, batch, timed_out)
            if budget and len(batch) > taken and cost + self._cost(batch[taken:]) > budget:
                batch.pop()
                self._held = item
                break
            cost += self._cost(batch[taken:])
        return batch, timed_out

    @staticmethod
    def _cost(entries: list) -> float:
        """Estimated tokens of batch entries that will run (an expired one costs nothing)."""
        return sum(getattr(payload, "cost", 0.0) for _, _, payload in entries if not isinstance(payload, Expired))

    @staticmethod
    def _take(lit_api: ls.LitAPI, item: tuple, batch: list, timed_out: list) -> None:
        """Into the batch, as the LitAPI's `admission` passes it on (`Expired` past its wait bound); or among the
        timed-out requests (LitServe answers those 504) when it waited past `request_timeout`."""
        if item == _SENTINEL_VALUE:
            raise _StopLoopError()
        response_queue_id, uid, timestamp, payload = item
        waited = time.monotonic() - timestamp
        admission = getattr(lit_api, "admission", None)
        if admission is not None:
            payload = admission.expire_late(payload, waited)
        limit = lit_api.request_timeout
        if not isinstance(payload, Expired) and limit not in (-1, False, None) and waited > limit:
            timed_out.append((response_queue_id, uid))
        else:
            batch.append((response_queue_id, uid, payload))


class PipeTransport(MPQueueTransport):
    """Worker -> HTTP process responses, read by the HTTP process's event loop itself (server/http/pipes.py)."""

    _inbox: asyncio.Queue | None = None

    async def areceive(self, consumer_id: int, timeout: float | None = None, block: bool = True):
        if self._inbox is None:  # the first call, in the (forked) HTTP process that consumes these responses
            self._inbox = asyncio.Queue()
            MessageReader(self._queues[consumer_id], self._inbox.put_nowait).start(asyncio.get_running_loop())
        return await self._inbox.get()  # None (LitServe's close sentinel) is skipped by its receiving loop


class EmbeddingServer(ls.LitServer):
    def __init__(self, *args, gzip_responses: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        middlewares = [m for m in self.app.user_middleware if m.cls is not GZipMiddleware]
        if gzip_responses:
            middlewares.insert(0, Middleware(GZipMiddleware, minimum_size=1000, compresslevel=1))
        self.app.user_middleware = middlewares

    @asynccontextmanager
    async def lifespan(self, app):
        """LitServe's, in each HTTP process, once its app is built."""
        settle_garbage_collector()
        async with super().lifespan(app):
            yield

    def _register_api_endpoints(self, lit_api: ls.LitAPI, request_type, response_type):
        """LitServe's route for the LitAPI, with its `admission.admit` before the request is queued (a Response: the
        request is answered with it, not queued) and `admission.release` once it is answered, however that went."""
        admission = getattr(lit_api, "admission", None)
        if admission is None:
            super()._register_api_endpoints(lit_api, request_type, response_type)
            return
        self._callback_runner.trigger_event(EventTypes.ON_SERVER_START.value, litserver=self)
        handler = RegularRequestHandler(lit_api, self)

        async def endpoint_handler(request):
            rejection = admission.admit(request)
            if rejection is not None:
                return rejection
            try:
                return await handler.handle_request(request, request_type)
            finally:
                admission.release(request)

        # Set by hand: this module's annotations are strings, and FastAPI needs the body's class to parse it.
        endpoint_handler.__annotations__ = {"request": request_type, "return": response_type}
        self.app.add_api_route(
            lit_api.api_path, endpoint_handler, methods=["POST"], dependencies=[Depends(self.setup_auth(lit_api))]
        )
        self._register_spec_endpoints(lit_api)

    def _init_manager(self, num_api_servers: int):
        """LitServe's own, with pipe queues for requests and responses instead of manager proxies, and a manager
        process that reports its own CPU and memory."""
        manager = SyncManager()
        manager.start(start_process_sampler, ("manager",))
        self.transport_config.manager = manager
        self.transport_config.num_consumers = num_api_servers
        self.workers_setup_status = manager.dict()
        self._shutdown_event = manager.Event()
        for lit_api in self.litapi_connector:
            self.litapi_request_queues[lit_api.api_path] = PipeQueue(SPAWN)
        if self._logger_connector._loggers:
            self.logger_queue = manager.Queue()
        self._logger_connector.run(self)
        self._transport = PipeTransport(manager, [PipeQueue(SPAWN) for _ in range(num_api_servers)])
        return manager
