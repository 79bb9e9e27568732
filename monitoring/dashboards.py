"""Grafana dashboards as code (grafana-foundation-sdk). `python -m monitoring.dashboards` rewrites the JSON files
that Grafana provisions from monitoring/grafana/dashboards/; a test fails when they differ from this code.

Every query filters on the dashboard variables `$instance`, `$backend` and `$model`, and rates use
`$__rate_interval`, so the panels stay right at any scrape interval.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DASHBOARD_DIR = Path(__file__).parent / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SERVED = 'instance=~"$instance", backend=~"$backend", model=~"$model"'
INSTANCE = 'instance=~"$instance"'
WINDOW = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def query(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def quantiles(metric: str, selector: str, by: str = "backend") -> list[Query]:
    return [
        query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{WINDOW}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def mean(metric: str, by: str = "backend") -> str:
    return (
        f"sum by ({by}) (rate({metric}_sum{{{SERVED}}}[{WINDOW}]))"
        f" / sum by ({by}) (rate({metric}_count{{{SERVED}}}[{WINDOW}]))"
    )


def time_series(title: str, unit: str, queries: list[Query], description: str, width: int = 12) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE).height(8).span(width)
    )
    for ref, item in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(prometheus.Dataquery().expr(item.expr).legend_format(item.legend).ref_id(ref))
    return panel


def variables() -> list:
    label_variable = lambda name, label, source: (  # noqa: E731 - three variables of one shape
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({source}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_variable("instance", "Instance", "embedserve_build_info"),
        label_variable("backend", "Backend", 'embedserve_build_info{instance=~"$instance"}'),
        label_variable("model", "Model", 'embedserve_build_info{instance=~"$instance", backend=~"$backend"}'),
    ]


#: Panels whose data only a host with an NVIDIA GPU produces; the only ones allowed to be empty on a CPU host.
GPU_PANELS = ("GPU memory (NVML)", "GPU memory (DCGM)", "GPU utilisation", "Torch CUDA allocator peak")


def embedserve_dashboard() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("embedserve")
        .uid("embedserve")
        .description("Traffic, tail latency, batching and memory of embedserve, per backend and model")
        .tags(["embedserve", "embeddings"])
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
    )
    for variable in variables():
        board = board.with_variable(variable)

    board = board.with_row(dashboard.Row("Traffic"))
    for title, unit, counter, description in (
        (
            "Requests/s",
            "reqps",
            "embedserve_requests_total",
            "Answered embedding requests per second, every status included",
        ),
        ("Inputs/s", "short", "embedserve_inputs_total", "Texts (or token-id inputs) embedded per second"),
        ("Tokens/s", "short", "embedserve_tokens_total", "Real (unpadded) tokens embedded per second"),
    ):
        board = board.with_panel(
            time_series(
                title,
                unit,
                [query(f"sum by (backend) (rate({counter}{{{SERVED}}}[{WINDOW}]))", "{{backend}}")],
                description,
                width=8,
            )
        )
    board = board.with_panel(
        time_series(
            "Errors/s by code",
            "reqps",
            [
                query(
                    f'sum by (backend, code) (rate(embedserve_requests_total{{{SERVED}, code!~"2.."}}[{WINDOW}]))',
                    "{{backend}} {{code}}",
                )
            ],
            "Non-2xx answers: 4xx are client errors, 503 is admission control shedding load, 504 a queue timeout",
        )
    )
    board = board.with_panel(
        time_series(
            "Requests in flight",
            "short",
            [query(f"sum by (backend) (embedserve_requests_in_flight{{{SERVED}}})", "{{backend}}")],
            "Received and not yet answered; at the queue limit the server answers 503",
        )
    )
    board = board.with_panel(
        time_series(
            "Shed requests/s by reason",
            "reqps",
            [
                query(
                    f"sum by (backend, reason) (rate(embedserve_rejected_requests_total{{{SERVED}}}[{WINDOW}]))",
                    "{{backend}} {{reason}}",
                )
            ],
            "Answered at once with 503 server_overloaded: expected_wait (the queued work would make the request wait "
            "past max_queue_wait_ms), queue_timeout (it waited that long before its batch), count_bound (max_queue)",
        )
    )
    board = board.with_panel(
        time_series(
            "Expected wait",
            "s",
            [query(f"max by (backend) (embedserve_expected_wait_seconds{{{SERVED}}})", "{{backend}}")],
            "The wait a new request would have now: the work queued for the backend over its measured throughput; "
            "above max_queue_wait_ms, new requests are shed",
        )
    )

    board = board.with_row(dashboard.Row("Latency"))
    board = board.with_panel(
        time_series(
            "Request latency p50 / p95 / p99",
            "s",
            quantiles("embedserve_request_duration_seconds", f'{SERVED}, status_class="2xx"'),
            "Successful requests, from body parsed to response sent, per backend",
            width=24,
        )
    )
    board = board.with_panel(
        time_series(
            "Queue wait vs inference (mean)",
            "s",
            [
                query(mean("embedserve_queue_wait_seconds"), "queue {{backend}}"),
                query(mean("embedserve_inference_duration_seconds"), "inference {{backend}}"),
            ],
            "Where a request's time goes: waiting for its dynamic batch, then embedding that batch",
        )
    )
    board = board.with_panel(
        time_series(
            "Queue wait p99",
            "s",
            [quantiles("embedserve_queue_wait_seconds", SERVED)[2]],
            "Tail of the wait between arrival and inference; rising while inference stays flat means saturation",
        )
    )

    board = board.with_row(dashboard.Row("Batching"))
    board = board.with_panel(
        heatmap.Panel()
        .title("Inputs per forward pass")
        .description("Distribution of forward-pass sizes formed by dynamic batching and the token budget")
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .calculate(False)
        .with_target(
            prometheus.Dataquery()
            .expr(f"sum by (le) (increase(embedserve_forward_inputs_bucket{{{SERVED}}}[{WINDOW}]))")
            .format(PromQueryFormat.HEATMAP)
            .legend_format("{{le}}")
            .ref_id("A")
        )
    )
    board = board.with_panel(
        time_series(
            "Requests per dynamic batch and padding",
            "short",
            [
                query(mean("embedserve_batch_requests"), "requests/batch {{backend}}"),
                query(mean("embedserve_forward_padding_ratio"), "padding ratio {{backend}}"),
            ],
            "How many requests one batch merged, and the share of padded tokens per forward pass",
        )
    )

    board = board.with_row(dashboard.Row("Memory and GPU"))
    board = board.with_panel(
        time_series(
            "Process resident memory",
            "bytes",
            [
                query(
                    f'sum by (backend) (embedserve_process_resident_memory_bytes{{{SERVED}, role="worker"}})',
                    "worker {{backend}}",
                ),
                query(f'sum(embedserve_process_resident_memory_bytes{{{INSTANCE}, role="http"}})', "http front"),
            ],
            "RSS of each backend's inference worker and of the HTTP front processes",
        )
    )
    board = board.with_panel(
        time_series(
            "Server CPU by process role",
            "short",
            [
                query(
                    f'sum by (backend) (rate(embedserve_process_cpu_seconds{{{SERVED}, role="worker"}}[{WINDOW}]))',
                    "worker {{backend}}",
                ),
                query(
                    f'sum by (role) (rate(embedserve_process_cpu_seconds{{{INSTANCE}, role!="worker"}}[{WINDOW}]))',
                    "{{role}}",
                ),
            ],
            "Cores in use: each backend's inference worker, and the server's own machinery (HTTP front, LitServe's "
            "manager, the main process); what the server costs beside the framework",
        )
    )
    board = board.with_panel(
        stat.Panel()
        .title("Model load time")
        .description("Seconds each backend took to load (export included on first use)")
        .datasource(DATASOURCE)
        .unit("s")
        .height(8)
        .span(12)
        .with_target(
            prometheus.Dataquery()
            .expr(f"max by (backend) (embedserve_model_load_seconds{{{SERVED}}})")
            .legend_format("{{backend}}")
            .ref_id("A")
        )
    )
    board = board.with_panel(
        time_series(
            "GPU memory (NVML)",
            "bytes",
            [
                query(f"embedserve_gpu_memory_used_bytes{{{INSTANCE}}}", "used gpu{{gpu}}"),
                query(f"embedserve_gpu_memory_total_bytes{{{INSTANCE}}}", "total gpu{{gpu}}"),
            ],
            "Device memory in use and in all, read by the server through NVML",
            width=8,
        )
    )
    board = board.with_panel(
        time_series(
            "GPU memory (DCGM)",
            "bytes",
            [
                query("DCGM_FI_DEV_FB_USED * 1024 * 1024", "used gpu{{gpu}}"),
                query("(DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) * 1024 * 1024", "total gpu{{gpu}}"),
            ],
            "Framebuffer memory from NVIDIA's dcgm-exporter (MiB, shown in bytes)",
            width=8,
        )
    )
    board = board.with_panel(
        time_series(
            "GPU utilisation",
            "percentunit",
            [
                query(f"embedserve_gpu_utilization_ratio{{{INSTANCE}}}", "nvml gpu{{gpu}}"),
                query("DCGM_FI_DEV_GPU_UTIL / 100", "dcgm gpu{{gpu}}"),
            ],
            "Share of time a kernel ran, from NVML (server) and DCGM",
            width=8,
        )
    )
    board = board.with_panel(
        time_series(
            "Torch CUDA allocator peak",
            "bytes",
            [query(f"embedserve_device_memory_peak_bytes{{{SERVED}}}", "{{backend}}")],
            "Peak memory torch's caching allocator held on the GPU",
            width=24,
        )
    )
    return board


DASHBOARDS = {"embedserve.json": embedserve_dashboard}


def render(builder: dashboard.Dashboard) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(builder.build()) + "\n"


def panel_queries(dashboard_json: dict) -> dict[str, list[str]]:
    """Panel title -> its PromQL expressions, as Grafana will run them (rows flattened)."""
    panels = []
    for panel in dashboard_json.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in panels if p.get("type") != "row"}


def main() -> None:
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for filename, build in DASHBOARDS.items():
        path = DASHBOARD_DIR / filename
        path.write_text(render(build()))
        titles = panel_queries(json.loads(path.read_text()))
        print(f"wrote {path} ({len(titles)} panels)", file=sys.stderr)


if __name__ == "__main__":
    main()
