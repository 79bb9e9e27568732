"""The committed dashboards are what monitoring/dashboards.py generates, and every query names real metrics."""

from __future__ import annotations

import json
import re

from monitoring.dashboards import DASHBOARD_DIR, DASHBOARDS, GPU_PANELS, panel_queries, render
from server.metrics import server_metrics

# Metric names the NVML collector and NVIDIA's dcgm-exporter export (not in ServerMetrics' attributes).
GPU_METRICS = {
    "embedserve_gpu_memory_used_bytes",
    "embedserve_gpu_memory_total_bytes",
    "embedserve_gpu_utilization_ratio",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_UTIL",
}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "le", "backend", "code", "gpu"}


def exported_names() -> set[str]:
    names = set()
    for metric in vars(server_metrics()).values():
        if not hasattr(metric, "_name"):
            continue
        kind, name = metric._type, metric._name
        if kind == "counter":
            names.add(f"{name}_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names | GPU_METRICS


def test_committed_json_is_what_the_code_generates():
    for filename, build in DASHBOARDS.items():
        committed = (DASHBOARD_DIR / filename).read_text()
        assert committed == render(build()), f"{filename} is stale: run `python -m monitoring.dashboards`"


def test_every_panel_queries_metrics_the_server_exports():
    known = exported_names()
    board = json.loads((DASHBOARD_DIR / "embedserve.json").read_text())
    queries = panel_queries(board)
    assert len(queries) >= 12
    for title, exprs in queries.items():
        assert exprs, f"panel {title!r} has no query"
        for expr in exprs:
            selectors = set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\{", expr))
            unknown = {name for name in selectors if name not in PROMQL_WORDS} - known
            assert not unknown, f"panel {title!r} queries {unknown}, which nothing exports"
    assert set(GPU_PANELS) <= set(queries)


def test_panels_filter_on_the_dashboard_variables():
    board = json.loads((DASHBOARD_DIR / "embedserve.json").read_text())
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "instance", "backend", "model"}
    for title, exprs in panel_queries(board).items():
        if title in GPU_PANELS and all("DCGM" in e or "embedserve_gpu_" in e for e in exprs):
            continue  # device-level series carry no backend/model label
        assert all("$instance" in e for e in exprs), title
        # A series of one backend's work carries backend and model: a panel that ignores the variables shows them
        # all. Exempt: processes every backend shares (the HTTP front, main, manager) and the GPU as a device.
        shared = ('role="http"', 'role!="worker"', "embedserve_gpu_")
        served = [e for e in exprs if "embedserve_" in e and not any(marker in e for marker in shared)]
        assert all("$backend" in e and "$model" in e for e in served), title
