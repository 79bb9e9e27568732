"""A running server's processes, read from outside through /proc (psutil): CPU time and memory per process role.

Roles, as LitServe lays a server out: `main` (the `embedserve serve` process), `http` (the front processes that
listen on the port), `worker` (one spawned inference process per backend), and `other` (LitServe's manager and
Python's resource tracker).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

MiB = 1024 * 1024


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str
    cpu_seconds: float
    rss: int
    pss: int  # proportional set size: pages shared between the processes are split among them


class ServerTree:
    def __init__(self, root_pid: int, port: int):
        self.root = psutil.Process(root_pid)
        self.port = port

    def role(self, process: psutil.Process) -> str:
        if process.pid == self.root.pid:
            return "main"
        command = " ".join(process.cmdline())
        if "spawn_main" in command:
            return "worker"
        # LitServe's manager is forked after the port is bound, so it holds the listening socket too; it alone
        # listens on a named Unix socket (multiprocessing's /tmp/pymp-*/listener-*).
        if any(connection.laddr for connection in process.net_connections("unix")):
            return "other"
        listening = any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in process.net_connections())
        return "http" if listening else "other"

    def sample(self) -> list[ProcessSample]:
        samples = []
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_full_info()
                    samples.append(
                        ProcessSample(
                            process.pid, self.role(process), times.user + times.system, memory.rss, memory.pss
                        )
                    )
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return samples


def cores_by_role(before: list[ProcessSample], after: list[ProcessSample], seconds: float) -> dict[str, float]:
    """Cores each role used between two samples (1.0 = one core busy the whole time)."""
    start = {sample.pid: sample.cpu_seconds for sample in before}
    used: dict[str, float] = {}
    for sample in after:
        used[sample.role] = used.get(sample.role, 0.0) + sample.cpu_seconds - start.get(sample.pid, sample.cpu_seconds)
    return {role: cpu / seconds for role, cpu in used.items()}


def memory_mib(samples: list[ProcessSample], role: str | None = None) -> tuple[float, float]:
    """(RSS summed, PSS summed) in MiB, of one role or of the whole tree."""
    chosen = [s for s in samples if role is None or s.role == role]
    return sum(s.rss for s in chosen) / MiB, sum(s.pss for s in chosen) / MiB
