"""Start `embedserve serve` as a child process and wait until /ready: used by `make demo` and the tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failed_backends(readiness: bytes) -> dict[str, str]:
    """From a /ready answer: each backend that failed to load, with its reason (none in anything but /ready's JSON)."""
    try:
        backends = json.loads(readiness).get("backends", {})
    except (ValueError, AttributeError):
        return {}
    return {name: state.get("error", "") for name, state in backends.items() if state.get("state") == "failed"}


class ServerProcess:
    def __init__(self, *serve_args: str, log_path: Path, env: dict[str, str] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        # Own session: stop() ends the HTTP processes and inference workers LitServe started, all together.
        self.process = subprocess.Popen(
            [*command, *serve_args],
            env={**os.environ, **(env or {})},
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300) -> ServerProcess:
        """Until /ready answers 200; a backend that failed to load ends the wait at once, with its reason. A wait that
        ends otherwise (that failure, the timeout, a Ctrl-C) stops the server first: it runs in a session of its own,
        which nothing else would end."""
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as not_ready:
                failed = failed_backends(not_ready.read())
                if failed:
                    raise RuntimeError(f"backends failed to load: {failed}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM to the main process alone, as `docker stop` sends it; the server stops its own processes. True
        when it exited with 0 and left none behind; whatever is left after `timeout` is killed (and it is False)."""
        group = self.child_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 5  # the last workers may still be on their way out
        while (left := [pid for pid in self.child_pids() if pid in group]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left or code is None:
            print(f"embedserve did not stop cleanly on SIGTERM; killing {left or 'it'}", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        return code == 0 and not left


def start_server_for_load(backends: list[str], model: str, log_path: Path) -> ServerProcess:
    """`embedserve serve` started by a load run (sweep, soak) that was given no --host: warnings only, in its log."""
    print(f"starting embedserve with {', '.join(backends)} on {model} ...", file=sys.stderr, flush=True)
    return ServerProcess(
        "--backends", ",".join(backends), "--model", model, "--log-level", "warning", log_path=log_path
    ).wait_ready()
