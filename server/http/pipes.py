"""Requests and responses between the server's processes over pipes, with no thread between the pipe and its user.

A `multiprocessing.Queue` hands every put to a feeder thread, which pickles and writes it; LitServe's responses were
read by a thread too. In the HTTP process both threads contend with the event loop for the GIL on every request,
which showed as CPU per request under single-text load.

- `PipeQueue.put` writes a message of up to PIPE_BUF bytes itself, when the pipe has room for it and no other writer
  holds the queue's lock: one non-blocking write, which the kernel makes all or nothing. Anything else (a larger
  message, a full pipe, a busy writer) goes through the feeder thread as before, so a put never blocks its caller;
  the feeder is handed the pickle already made, not the object.
  `get` is unchanged: both paths write the same framing. The price: a message written at once can overtake one the
  feeder was still pickling. That is fine here, where each message is a request or the one answer to one.
- `MessageReader` reads a queue's pipe in the event loop whenever it is readable, and never blocks: a message is handed
  on once it is whole, so a writer that stops mid-message cannot stall the loop.
"""

from __future__ import annotations

import asyncio
import os
import select
import struct
import sys
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from multiprocessing.reduction import ForkingPickler
from typing import Any

_HEADER = struct.Struct("!i")  # multiprocessing.connection's framing: a signed length, then the pickle
_LONG_HEADER = struct.Struct("!Q")  # after a length of -1: the real length of a message over 2 GiB
_READ_CHUNK = 1 << 20


_NO_DIRECT_WRITER = -1  # the pipe could not be reopened: every put goes through the feeder


class _Pickled:
    """An object's pickle, for the feeder thread: pickling it copies the bytes, and unpickling it gives the object."""

    __slots__ = ("data",)

    def __init__(self, data: memoryview):  # ForkingPickler.dumps' buffer, which pickle cannot take as it is
        self.data = data

    def __reduce__(self) -> tuple:
        return ForkingPickler.loads, (bytes(self.data),)


class PipeQueue(Queue):
    _direct_fd: int | None = None  # per process: the pipe's write end, opened again non-blocking (Linux only)

    def __init__(self, ctx: BaseContext):
        super().__init__(ctx=ctx)

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if not self._closed:
            data = ForkingPickler.dumps(obj)
            if _HEADER.size + len(data) <= select.PIPE_BUF and self._write_now(_HEADER.pack(len(data)) + data):
                return
            obj = _Pickled(data)  # the feeder pickles what it is given: not the object a second time
        super().put(obj, block, timeout)

    def _write_now(self, message: bytes) -> bool:
        fd = self._nonblocking_writer()
        # A bounded queue that is full (no semaphore left): put's own path blocks on it.
        if fd == _NO_DIRECT_WRITER or not self._sem.acquire(False):
            return False
        if not self._wlock.acquire(False):  # the feeder thread, or another process, is writing
            self._sem.release()
            return False
        try:
            os.write(fd, message)  # at most PIPE_BUF bytes: all of it, or BlockingIOError when the pipe is full
            return True
        except OSError:
            self._sem.release()
            return False
        finally:
            self._wlock.release()

    def _nonblocking_writer(self) -> int:
        """The write end as a new open file description: O_NONBLOCK on it leaves the feeder's blocking writes, which
        share the original one, as they are. _NO_DIRECT_WRITER where it cannot be reopened."""
        if self._direct_fd is None:
            try:
                if sys.platform != "linux":
                    raise OSError("no /proc/self/fd to reopen the pipe from")
                self._direct_fd = os.open(f"/proc/self/fd/{self._writer.fileno()}", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                self._direct_fd = _NO_DIRECT_WRITER
        return self._direct_fd


class MessageReader:
    """Hands each message of `queue` to `deliver`, in the event loop, as soon as it is whole. The process that starts
    it must be the queue's only reader: its pipe's read end becomes non-blocking, and `get` no longer works on it."""

    def __init__(self, queue: Queue, deliver: Callable[[Any], None]):
        self._queue = queue
        self._deliver = deliver
        self._fd = queue._reader.fileno()
        self._buffer = bytearray()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        os.set_blocking(self._fd, False)
        loop.add_reader(self._fd, self._readable, loop)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            chunk = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:  # every writer has closed the pipe: the server is shutting down
            loop.remove_reader(self._fd)
            return
        self._buffer += chunk
        for payload in self._whole_messages():
            self._queue._sem.release()  # as `get` does: a bounded queue counts its messages in flight
            self._deliver(ForkingPickler.loads(payload))

    def _whole_messages(self) -> list[bytes]:
        buffer, offset, messages = self._buffer, 0, []
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            start = offset + _HEADER.size
            if size == -1:
                if len(buffer) - start < _LONG_HEADER.size:
                    break
                (size,) = _LONG_HEADER.unpack_from(buffer, start)
                start += _LONG_HEADER.size
            if len(buffer) < start + size:
                break
            messages.append(bytes(buffer[start : start + size]))
            offset = start + size
        del buffer[:offset]
        return messages
