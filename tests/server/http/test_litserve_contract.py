"""Everything private of LitServe and CPython that server/http/litserve_changes.py and pipes.py touch, in one place.

LitServe is pinned exactly; these tests are what an upgrade of it (or of Python) meets first. Each failure names the
upstream piece that moved and the change of ours that depends on it, so that an upgrade says what to re-merge
instead of failing at run time under load.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import os
import queue
import re
import struct
import types
from multiprocessing.connection import Pipe
from pathlib import Path

import litserve as ls
import pytest

from server.http.litserve_changes import UPSTREAM_SOURCES, EmbeddingServer
from server.http.pipes import PipeQueue
from server.http.processes import SPAWN


def upstream(qualified: str):
    """`litserve.server.LitServer._init_manager` -> the object, or a failure that names what is gone."""
    parts = qualified.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(found, attribute):
                pytest.fail(f"LitServe no longer has {qualified} ({attribute} is gone)")
            found = getattr(found, attribute)
        return found
    pytest.fail(f"no module of {qualified} imports")


@pytest.mark.parametrize("qualified", sorted(UPSTREAM_SOURCES))
def test_the_upstream_code_we_copied_or_replaced_is_the_code_we_merged(qualified):
    fingerprint, ours = UPSTREAM_SOURCES[qualified]
    source = inspect.getsource(upstream(qualified))
    found = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert found == fingerprint, (
        f"LitServe {ls.__version__} changed {qualified} ({found}, merged: {fingerprint}); re-merge it into ours "
        f"({ours}), then set its fingerprint in UPSTREAM_SOURCES (server/http/litserve_changes.py). Its source now:\n"
        f"{source}"
    )


def test_an_upgrade_that_changes_a_merged_source_is_told_what_to_re_merge(monkeypatch):
    name = "litserve.server.LitServer._init_manager"
    monkeypatch.setitem(UPSTREAM_SOURCES, name, ("0" * 16, "EmbeddingServer._init_manager"))
    with pytest.raises(AssertionError, match=r"re-merge it into ours \(EmbeddingServer._init_manager\)"):
        test_the_upstream_code_we_copied_or_replaced_is_the_code_we_merged(name)


# Private names the changes import or read, with what of ours needs each.
PRIVATE_NAMES = {
    "litserve.loops.base._SENTINEL_VALUE": "DrainingBatchLoop._take: the shutdown sentinel in a request queue",
    "litserve.loops.base._StopLoopError": "DrainingBatchLoop._take: how a loop is told to stop",
    "litserve.loops.base._inject_context": "read_hook_signatures_once: LitServe reads a hook's signature here",
    "litserve.server.RegularRequestHandler": "EmbeddingServer._register_api_endpoints: the handler it wraps",
    "litserve.transport.process_transport.MPQueueTransport": "PipeTransport: the transport it subclasses",
    "litserve.loops.simple_loops.BatchedLoop": "DrainingBatchLoop: the loop it subclasses",
    "litserve.callbacks.base.EventTypes.ON_SERVER_START": "EmbeddingServer._register_api_endpoints",
    "litserve.server.LitServer._register_spec_endpoints": "EmbeddingServer._register_api_endpoints",
    "litserve.server.LitServer.setup_auth": "EmbeddingServer._register_api_endpoints",
}


@pytest.mark.parametrize("qualified", sorted(PRIVATE_NAMES))
def test_every_private_litserve_name_we_use_still_exists(qualified):
    assert upstream(qualified) is not None, f"{qualified} is gone; needed by {PRIVATE_NAMES[qualified]}"


def test_the_stop_error_is_an_exception_and_the_hooks_keep_their_parameters():
    from litserve.loops.base import _inject_context, _StopLoopError
    from litserve.loops.simple_loops import BatchedLoop
    from litserve.server import RegularRequestHandler
    from litserve.transport.process_transport import MPQueueTransport

    assert issubclass(_StopLoopError, Exception)
    expected = {
        BatchedLoop.get_batch_requests: ["self", "lit_api", "request_queue", "transport"],
        RegularRequestHandler.handle_request: ["self", "request", "request_type"],
        MPQueueTransport.__init__: ["self", "manager", "queues"],
        MPQueueTransport.areceive: ["self", "consumer_id", "timeout", "block"],
        _inject_context: ["context", "func", "args", "kwargs"],
    }
    for function, parameters in expected.items():
        found = list(inspect.signature(function).parameters)
        assert found == parameters, f"{function.__qualname__} takes {found} now, not {parameters}"


def test_a_request_is_queued_as_the_four_items_the_batching_loop_unpacks():
    from litserve.server import RegularRequestHandler

    requests: queue.Queue = queue.Queue()
    server = types.SimpleNamespace(
        _get_request_queue=lambda path: requests,
        app=types.SimpleNamespace(response_queue_id=3),
        _callback_runner=types.SimpleNamespace(trigger_event=lambda *args, **kwargs: None),
        active_requests=0,
    )
    handler = RegularRequestHandler(types.SimpleNamespace(api_path="/x/v1/embeddings"), server)
    uid, response_queue_id = asyncio.run(handler._submit_request({"input": "a"}))
    item = requests.get_nowait()
    assert len(item) == 4, f"LitServe queues {len(item)} items per request; DrainingBatchLoop._take unpacks 4"
    assert item[:2] == (response_queue_id, uid) == (3, uid) and isinstance(item[2], float)
    assert item[3] == {"input": "a"}


def test_the_server_attributes_the_copied_methods_set_and_read_exist():
    """What EmbeddingServer's copies of `_init_manager` and `_register_api_endpoints`, and its constructor, touch."""

    class Echo(ls.LitAPI):
        def setup(self, device):
            pass

        def predict(self, x):
            return x

    server = EmbeddingServer(Echo(), accelerator="cpu")
    for name in (
        "transport_config",
        "litapi_connector",
        "litapi_request_queues",
        "_logger_connector",
        "_callback_runner",
        "app",
    ):
        assert hasattr(server, name), f"LitServer has no `{name}` any more"
    assert hasattr(server.transport_config, "manager") and hasattr(server.transport_config, "num_consumers")
    assert isinstance(server._logger_connector._loggers, list)
    assert all(hasattr(middleware, "cls") for middleware in server.app.user_middleware)
    # What our `_init_manager` sets for LitServe to use elsewhere: LitServe's own code must still read each.
    package = Path(ls.__file__).parent
    litserve_source = "\n".join(path.read_text() for path in package.rglob("*.py"))
    for name in ("workers_setup_status", "_shutdown_event", "logger_queue", "_transport"):
        reads = re.findall(rf"\.{name}\b(?!\s*=[^=])", litserve_source)
        assert reads, f"LitServe no longer reads `{name}`, which EmbeddingServer._init_manager sets"
    transport = ls.transport.process_transport.MPQueueTransport(None, ["queue"])
    assert transport._queues == ["queue"], "PipeTransport reads the consumer's queue from `_queues`"


def test_the_cpython_queue_internals_the_pipe_queue_uses():
    """PipeQueue writes a small message itself, as the feeder would: under the queue's `_wlock`, counted by `_sem`,
    into `_writer`, framed as multiprocessing.connection frames it (a signed 4-byte length); MessageReader reads
    `_reader` and releases `_sem` as `get` does."""
    pipe_queue = PipeQueue(SPAWN)
    for name in ("_closed", "_sem", "_wlock", "_writer", "_reader"):
        assert hasattr(pipe_queue, name), f"multiprocessing.queues.Queue has no `{name}` any more"
    assert callable(pipe_queue._sem.acquire) and callable(pipe_queue._wlock.acquire)
    reader, writer = Pipe(duplex=False)
    writer.send_bytes(b"abc")
    assert os.read(reader.fileno(), 16) == struct.pack("!i", 3) + b"abc", "the pipe framing changed"
    pipe_queue.close()
