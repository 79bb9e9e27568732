"""The load-testing side's configuration: `embedserve bench`, `sweep` and `report`, on the server's settings base
(the same flags > EMBEDSERVE_* environment > YAML file order)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import CliPositionalArg

from server.settings import DEFAULT_MODEL, CommaList, Duration, EngineSettings, SettingsBase


class BenchSettings(EngineSettings):
    """`embedserve bench`: each backend in-process (throughput, parity, retrieval quality, peak RSS), then served
    (idle CPU, throughput at saturation against the in-process figure, CPU per process role, memory)."""

    backends: CommaList[str] = Field(["torch", "onnx", "openvino"], description="backends to measure, comma separated")
    batch_sizes: CommaList[int] = Field([1, 8, 32], description="inputs per forward call, comma separated")
    profiles: CommaList[Literal["short", "long"]] = Field(["short", "long"], description="text lengths")
    seconds: float = Field(3.0, gt=0, description="timed seconds per cell (after one warm-up call)")
    parity_texts: int = Field(128, ge=1, description="texts compared against sentence-transformers")
    served_backends: CommaList[str] = Field(
        ["torch", "onnx", "openvino"],
        description="backends of the served half, all in one server (empty: in-process only); each must also be in "
        "--backends for its ratio",
    )
    idle_seconds: float = Field(30.0, gt=0, description="how long the idle server's CPU is measured")
    served_seconds: float = Field(10.0, gt=0, description="measured seconds per backend and load shape, served")
    warmup_seconds: float = Field(3.0, ge=0, description="unmeasured load before each served measurement")
    soak_seconds: float = Field(
        0.0,
        ge=0,
        description="then mixed-length load on every served backend this long, and an overload burst: "
        "how each worker's RSS drifts and comes back (0: no soak)",
    )


class SweepSettings(SettingsBase):
    """`embedserve sweep`: Locust over backend x batch size x concurrency x profile, one cell at a time."""

    host: str | None = Field(None, description="server to load, e.g. http://127.0.0.1:8000 (default: start one)")
    model: str = Field(DEFAULT_MODEL, description="model to request (and to serve, when the sweep starts the server)")
    backends: CommaList[str] = Field(["torch", "onnx", "openvino"], description="backends to load, comma separated")
    batch_sizes: CommaList[int] = Field([1, 8, 32, 128], description="inputs per request, comma separated")
    concurrency: CommaList[int] = Field(
        [1, 4, 16, 64], description="concurrent Locust users (closed loop), comma separated"
    )
    profiles: CommaList[Literal["short", "medium", "long", "variable"]] = Field(
        ["short", "long"], description="text lengths: short ~16, medium ~128, long ~512 tokens, variable"
    )
    duration: Duration = Field(30.0, gt=0, description="measured time per cell (30s, 2m, ...)")
    warmup: Duration = Field(5.0, ge=0, description="unmeasured time before each cell's measurement")
    encoding_format: Literal["float", "base64"] = Field("float", description="encoding_format of the requests")
    dimensions: int | None = Field(None, ge=1, description="Matryoshka dimensions to request")
    seed: int = Field(0, description="seed of the text choice: the same seed sends the same requests")
    find_max: bool = Field(False, description="saturation mode: per backend, raise concurrency until the SLO breaks")
    slo_p99_ms: float = Field(100.0, gt=0, description="p99 latency objective of --find-max")
    max_concurrency: int = Field(256, ge=1, description="highest concurrency --find-max tries")
    locust_processes: int = Field(1, ge=1, description="Locust processes per cell (--processes), for heavy loads")
    output: Path = Field(Path("reports"), description="parent directory of the run's report directory")


class ReportSettings(SettingsBase):
    """`embedserve report RUN [BASELINE]`: plots and one HTML file from a sweep; with two runs, a comparison."""

    runs: CliPositionalArg[list[Path]] = Field(
        description="a sweep directory; a second one is the baseline to compare against"
    )
    regression_pct: float = Field(10.0, gt=0, description="a cell worse than the baseline by this much is marked")
