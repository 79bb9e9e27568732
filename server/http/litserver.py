"""LitServe as embedserve runs it: the same server, with these documented changes that make its own overhead nearly
free, so that a served comparison measures the frameworks and not the server (tested in tests/server/test_litserver.py):

1. `DrainingBatchLoop`: LitServe's batched loop polls its request queue every millisecond, idle or not (a third of a
   core for three backends on a 2-core machine). This loop blocks until a request arrives, then takes what is already
   queued, and waits for more only up to `batch_timeout`: requests that arrive while a batch runs form the next one,
   continuously, as TEI batches.
2. Pipe queues: LitServe passes requests and responses through `multiprocessing.Manager` queues, where every put and
   get is a round trip through the manager process. `EmbeddingServer` uses plain `multiprocessing` queues (a pipe
   each); the manager keeps only the rarely touched worker-status dict and shutdown event.
3. Responses reach the HTTP process's event loop through one reader thread (`PipeTransport`), not through a new
   thread-pool task per response as LitServe's transport does.
4. No gzip by default: LitServe gzips every response over 1 kB at level 9 for clients that accept it (the OpenAI SDK
   does), which for 32 embeddings costs more CPU in the HTTP process than the forward pass. `--gzip-responses` turns
   it back on, at level 1.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
import time
from multiprocessing.managers import SyncManager
from queue import Empty, Queue

import litserve as ls
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.process_transport import MPQueueTransport
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from server.metrics import start_process_sampler

# A blocked worker wakes this often with nothing to do, to notice a shutdown that did not reach its queue.
IDLE_WAKE_SECONDS = 1.0
# Spawn context: LitServe starts inference workers with spawn; the queues must follow them there.
_SPAWN = mp.get_context("spawn")


class DrainingBatchLoop(BatchedLoop):
    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Queue, transport) -> tuple[list, list]:
        """Blocks for the first request; then takes what is queued, waiting at most `batch_timeout` for more."""
        batch: list = []
        timed_out: list = []
        try:
            first = request_queue.get(timeout=IDLE_WAKE_SECONDS)
        except Empty:
            return batch, timed_out
        self._admit(lit_api, first, batch, timed_out)
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(batch) + len(timed_out) < lit_api.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                break
            self._admit(lit_api, item, batch, timed_out)
        return batch, timed_out

    @staticmethod
    def _admit(lit_api: ls.LitAPI, item: tuple, batch: list, timed_out: list) -> None:
        """Into the batch, or among the timed-out requests (LitServe answers those 504) when it waited too long."""
        if item == _SENTINEL_VALUE:
            raise _StopLoopError()
        response_queue_id, uid, timestamp, payload = item
        limit = lit_api.request_timeout
        if limit not in (-1, False, None) and time.monotonic() - timestamp > limit:
            timed_out.append((response_queue_id, uid))
        else:
            batch.append((response_queue_id, uid, payload))


class PipeTransport(MPQueueTransport):
    """Worker -> HTTP process responses on pipe queues, read by one thread that hands them to the event loop."""

    _inbox: asyncio.Queue | None = None

    async def areceive(self, consumer_id: int, timeout: float | None = None, block: bool = True):
        if self._inbox is None:  # the first call, in the (forked) HTTP process that consumes these responses
            self._inbox = asyncio.Queue()
            threading.Thread(
                target=self._pump, args=(self._queues[consumer_id], asyncio.get_running_loop()), daemon=True
            ).start()
        return await self._inbox.get()  # None (LitServe's close sentinel) is skipped by its receiving loop

    def _pump(self, queue: Queue, loop: asyncio.AbstractEventLoop) -> None:
        """Until LitServe's close sentinel (None), or until the process shuts the queue or the loop down."""
        try:
            while True:
                item = queue.get()
                loop.call_soon_threadsafe(self._inbox.put_nowait, item)
                if item is None:
                    return
        except Exception:  # noqa: BLE001 - at shutdown the queue or the event loop goes away under this thread
            return


class EmbeddingServer(ls.LitServer):
    def __init__(self, *args, gzip_responses: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        middlewares = [m for m in self.app.user_middleware if m.cls is not GZipMiddleware]
        if gzip_responses:
            middlewares.insert(0, Middleware(GZipMiddleware, minimum_size=1000, compresslevel=1))
        self.app.user_middleware = middlewares

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
            self.litapi_request_queues[lit_api.api_path] = _SPAWN.Queue()
        if self._logger_connector._loggers:
            self.logger_queue = manager.Queue()
        self._logger_connector.run(self)
        self._transport = PipeTransport(manager, [_SPAWN.Queue() for _ in range(num_api_servers)])
        return manager
