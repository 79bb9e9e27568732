"""Pipe queues without threads (server/http/pipes.py): small puts written by the caller, larger ones and a full pipe
through the feeder thread, and an event-loop reader that hands on whole messages only."""

from __future__ import annotations

import asyncio
import os
import queue
import struct
import sys
import threading
from multiprocessing.reduction import ForkingPickler

import pytest

from server.http.pipes import MessageReader, PipeQueue
from server.http.processes import SPAWN

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the direct write reopens the pipe via /proc/self/fd")


@linux_only
def test_a_small_put_is_written_by_the_caller_and_a_large_one_by_the_feeder_thread():
    pipe = PipeQueue(SPAWN)
    pipe.put(("request", "a short text"))
    assert pipe._thread is None  # no feeder thread was needed
    assert pipe.get(timeout=5) == ("request", "a short text")
    large = ("request", "x" * 100_000)
    pipe.put(large)
    assert pipe._thread is not None
    assert pipe.get(timeout=5) == large


def test_where_the_pipe_cannot_be_reopened_every_put_goes_through_the_feeder(monkeypatch):
    monkeypatch.setattr("server.http.pipes.sys.platform", "darwin")  # no /proc/self/fd there
    pipe = PipeQueue(SPAWN)
    pipe.put(("request", "a short text"))
    assert pipe._thread is not None
    pipe.put(("request", "another"))
    assert [pipe.get(timeout=5) for _ in range(2)] == [("request", "a short text"), ("request", "another")]


class CountsItsPickling:
    pickled = 0

    def __init__(self, payload: str):
        self.payload = payload

    def __reduce__(self) -> tuple:
        CountsItsPickling.pickled += 1
        return CountsItsPickling, (self.payload,)


@pytest.mark.parametrize("payload", ["a short text", "x" * 100_000], ids=["direct write", "through the feeder"])
def test_each_put_pickles_its_object_once(payload):
    CountsItsPickling.pickled = 0
    pipe = PipeQueue(SPAWN)
    pipe.put(CountsItsPickling(payload))
    assert pipe.get(timeout=5).payload == payload
    assert CountsItsPickling.pickled == 1


def test_a_full_pipe_never_blocks_the_caller_and_loses_nothing():
    pipe = PipeQueue(SPAWN)
    messages = [(number, "y" * 1000) for number in range(3000)]  # 3 MB: far past a pipe's buffer
    putter = threading.Thread(target=lambda: [pipe.put(message) for message in messages])
    putter.start()
    putter.join(timeout=30)
    assert not putter.is_alive(), "a put blocked on the full pipe"
    received = [pipe.get(timeout=10) for _ in messages]
    with pytest.raises(queue.Empty):
        pipe.get(timeout=0.2)
    # A direct write may pass a message that the feeder was still pickling; none is lost or repeated.
    assert sorted(received) == messages


def read_with_the_event_loop(pipe: PipeQueue, count: int, between=None) -> list:
    """`count` messages through a MessageReader; `between(received)`, if given, runs in the loop while it waits."""

    async def main() -> list:
        inbox: asyncio.Queue = asyncio.Queue()
        MessageReader(pipe, inbox.put_nowait).start(asyncio.get_running_loop())
        if between is not None:
            await between(inbox)
        return [await asyncio.wait_for(inbox.get(), timeout=10) for _ in range(count)]

    return asyncio.run(main())


def test_the_reader_hands_on_every_message_whole_small_and_large_in_order_from_one_writer():
    pipe = PipeQueue(SPAWN)
    messages = [("small", number) for number in range(20)] + [("large", "z" * 3_000_000)]

    def write() -> None:  # the large one spans many reads of the pipe, and blocks its feeder until they happen
        for message in messages:
            pipe.put(message)

    threading.Thread(target=write, daemon=True).start()
    assert read_with_the_event_loop(pipe, len(messages)) == messages


def test_the_reader_waits_for_the_rest_of_a_message_without_blocking_the_loop():
    pipe = PipeQueue(SPAWN)
    payload = ForkingPickler.dumps(("answer", "w" * 5000))
    framed = struct.pack("!i", len(payload)) + payload
    writer = pipe._writer.fileno()
    pipe._sem.acquire()  # what put does for every message; the reader gives it back

    async def half_then_rest(inbox: asyncio.Queue) -> None:
        os.write(writer, framed[:3000])
        ticks = 0
        for _ in range(20):  # the loop keeps running while half a message waits in the pipe
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and inbox.empty()
        os.write(writer, framed[3000:])

    assert read_with_the_event_loop(pipe, 1, half_then_rest) == [("answer", "w" * 5000)]
