"""The load-testing side's configuration: `embedserve bench`, `sweep` and `report`, on the server's settings base
(the same flags > EMBEDSERVE_* environment > YAML file order)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import CliPositionalArg

from corpus.texts import PROFILES, TextProfile
from loadtest.client.arrivals import Arrival
from loadtest.sweep.targets import parse_peer
from server.settings import DEFAULT_MODEL, CommaList, Duration, EngineSettings, SettingsBase, default_cache_dir

PROFILES_HELP = "text lengths, comma separated: " + "; ".join(f"{name} {about}" for name, about in PROFILES.items())


class BenchSettings(EngineSettings):
    """`embedserve bench`: each backend in-process (throughput, parity, retrieval quality, peak RSS), then served
    (idle CPU, throughput at saturation against the in-process figure, CPU per process role, memory)."""

    backends: CommaList[str] = Field(["torch", "onnx", "openvino"], description="backends to measure, comma separated")
    batch_sizes: CommaList[int] = Field([1, 8, 32], description="inputs per forward call, comma separated")
    profiles: CommaList[TextProfile] = Field(["short", "long"], description=PROFILES_HELP)
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
    output: Path = Field(
        Path("reports"), description="parent directory of the run's directory (its vector fingerprints)"
    )
    reference: bool = Field(
        False,
        description="also time each backend beside sentence-transformers' own path on the same model and graph "
        "(torch; ONNX and OpenVINO backends), in alternated rounds: ours / reference per cell",
    )
    reference_pairs: int = Field(
        3,
        ge=1,
        description="--reference: pairs of rounds per cell, each ours-reference-reference-ours (more: a tighter range)",
    )


class ServerClientSettings(SettingsBase):
    """What a tool that loads a running server needs besides its URL."""

    api_key: CommaList[SecretStr] = Field(
        [],
        description="the server's API key, sent as `Authorization: Bearer` (env EMBEDSERVE_API_KEY, the server's own "
        "variable: with a comma-separated list, the first key); a server the tool starts requires it too",
    )


class SweepSettings(ServerClientSettings):
    """`embedserve sweep`: backend x profile x batch size x load, one cell at a time. The load is closed loop
    (--concurrency: Locust users, each waiting for its answer) or open loop (--rates: arrivals per second, sent when
    due whatever the server does; both when both are given)."""

    host: str | None = Field(None, description="server to load, e.g. http://127.0.0.1:8000 (default: start one)")
    model: str = Field(DEFAULT_MODEL, description="model to request (and to serve, when the sweep starts the server)")
    backends: CommaList[str] = Field(["torch", "onnx", "openvino"], description="backends to load, comma separated")
    batch_sizes: CommaList[int] = Field([1, 8, 32, 128], description="inputs per request, comma separated")
    concurrency: CommaList[int] = Field(
        [1, 4, 16, 64], description="concurrent Locust users (closed loop), comma separated"
    )
    rates: CommaList[float] = Field(
        [], description="open loop: requests per second to send, comma separated (empty: closed loop only)"
    )
    arrival: Arrival = Field("poisson", description="open loop: arrival process, poisson or constant (evenly spaced)")
    slo_ms: float = Field(
        100.0,
        gt=0,
        description="latency objective: goodput counts the answers within it; --find-max wants p99 within it",
    )
    profiles: CommaList[TextProfile] = Field(["short", "long"], description=PROFILES_HELP)
    duration: Duration = Field(30.0, gt=0, description="measured time per cell (30s, 2m, ...)")
    warmup: Duration = Field(5.0, ge=0, description="unmeasured time before each cell's measurement")
    encoding_format: Literal["float", "base64"] = Field("float", description="encoding_format of the requests")
    dimensions: int | None = Field(None, ge=1, description="Matryoshka dimensions to request")
    seed: int = Field(0, description="seed of the text choice: the same seed sends the same requests")
    find_max: bool = Field(
        False,
        description="saturation search: per backend, raise the load (users, or the rate with --rates) until p99 "
        "breaks --slo-ms or requests fail",
    )
    max_concurrency: int = Field(256, ge=1, description="highest concurrency --find-max tries")
    max_rate: float = Field(4096.0, gt=0, description="highest rate --find-max tries (open loop)")
    generator_capacity: bool = Field(
        False, description="first measure and print the highest rate one open-loop generator process holds here"
    )
    locust_processes: int = Field(1, ge=1, description="Locust processes per cell (--processes), for heavy loads")
    peer: list[str] = Field(
        [],
        description="NAME=URL, repeatable: also load another OpenAI-compatible embedding server (its base URL: "
        "requests go to URL/embeddings), with the same requests and checks, alternated with ours",
    )
    rounds: int = Field(
        1,
        ge=1,
        description="each cell of the grid this many times, in alternated order (ours, peers, then peers, ours, ...); "
        "--find-max searches once",
    )
    output: Path = Field(Path("reports"), description="parent directory of the run's report directory")

    @field_validator("peer")
    @classmethod
    def _peers_are_name_equals_url(cls, peers: list[str]) -> list[str]:
        names = [parse_peer(spec)[0] for spec in peers]  # raises with the flag's expected form
        if len(set(names)) < len(names):
            raise ValueError(f"--peer names must differ: {names}")
        return peers


class ReportSettings(SettingsBase):
    """`embedserve report RUN [BASELINE]`: plots and one HTML file from a sweep; with two runs, a comparison."""

    runs: CliPositionalArg[list[Path]] = Field(
        description="a sweep directory; a second one is the baseline to compare against"
    )
    regression_pct: float = Field(10.0, gt=0, description="a cell worse than the baseline by this much is marked")


class SoakSettings(ServerClientSettings):
    """`embedserve soak`: steady open-loop load of mixed request sizes and lengths with a share of bad requests,
    every answer checked against reference vectors of its own inputs, and the server's memory followed."""

    host: str | None = Field(None, description="server to load (default: start one with --backends)")
    backends: CommaList[str] = Field(
        [],
        description="backends to load (default: every ready one the server lists; torch,onnx,openvino when "
        "the soak starts the server)",
    )
    model: str | None = Field(None, description="model (default: the served one; when starting a server, MiniLM)")
    rate: float = Field(1.0, gt=0, description="requests per second, over all backends")
    duration: Duration = Field(600.0, gt=0, description="how long the load lasts (30s, 10m, ...)")
    warmup: Duration = Field(60.0, ge=0, description="memory drift is measured from the end of this")
    arrival: Arrival = Field("poisson", description="arrival process, poisson or constant")
    max_inputs: int = Field(16, ge=1, description="inputs per request: 1 to this many")
    profile: TextProfile = Field("variable", description="text lengths of the inputs")
    texts: int = Field(96, ge=2, description="distinct texts; each one's reference vector is taken alone first")
    bad_share: float = Field(0.03, ge=0, lt=1, description="share of requests that are invalid on purpose")
    min_cosine: float = Field(
        0.99, gt=0, le=1, description="an answer's vector must be this close to its input's reference vector"
    )
    slo_ms: float = Field(1000.0, gt=0, description="latency objective of the goodput figure")
    sample_seconds: float = Field(5.0, gt=0, description="how often the server's memory is read")
    seed: int = Field(0, description="seed of texts, sizes, bad requests and arrivals")
    overload: bool = Field(
        False,
        description="the overload scenario: a probe at --rate, which must be past capacity (what the server admits "
        "then is its capacity), then 80% of that capacity and twice it, each --duration long, with a summary",
    )
    output: Path = Field(Path("reports"), description="parent directory of the soak's report directory")


class AdviseSettings(ServerClientSettings):
    """`embedserve advise`: the cheapest model x backend x replicas that meets a p99 objective at a request rate and
    a quality bar on your own texts, measured here, then served and verified."""

    models: CommaList[str] = Field([DEFAULT_MODEL], description="models to consider (zoo names, hub IDs or folders)")
    backends: CommaList[str] = Field(
        [], description="candidate backends, variants included (default: every backend this machine can run)"
    )
    corpus: Path | None = Field(
        None, description="your texts: one per line, or JSONL with a `text` field (default: the built-in corpus)"
    )
    queries: Path | None = Field(
        None, description="your queries, same formats (default: the first sentence of some corpus texts)"
    )
    qrels: Path | None = Field(
        None,
        description="relevance labels (TREC `qid 0 docid grade` or BEIR TSV `query-id corpus-id score`): recall@10 "
        "and nDCG@10; ids are JSONL `_id`/`id` fields, else line numbers from 1",
    )
    rate: float = Field(10.0, gt=0, description="requests per second the deployment must serve")
    inputs_per_request: str = Field("1", description="inputs per request: a number, or a range such as 1-16")
    slo_p99_ms: float = Field(200.0, gt=0, description="latency objective: p99 of every request, in ms")
    min_overlap: float = Field(0.95, ge=0, le=1, description="quality bar: top-10 overlap with the fp32 reference")
    min_cosine: float = Field(0.99, ge=-1, le=1, description="quality bar: worst cosine to the fp32 reference")
    price_per_hour: float | None = Field(
        None, gt=0, description="price of this machine per hour (default: cost in core-hours, or GPU-hours)"
    )
    headroom: float = Field(0.3, ge=0, description="replicas run at most 1/(1 + headroom) of their measured maximum")
    budget: Duration = Field(1200.0, gt=0, description="time the whole run may take (20m, 1h, ...); it plans to fit")
    verify_seconds: Duration = Field(30.0, gt=0, description="how long the chosen setup is verified under load")
    tolerance: float = Field(0.15, gt=0, description="two rate-search rounds agree when within this share")
    max_documents: int = Field(2000, ge=10, description="corpus texts used for quality (a seeded sample beyond)")
    max_tokens: int | None = Field(None, ge=1, description="cap on tokens per input (default: the model's limit)")
    trust_remote_code: bool = Field(False, description="allow models that ship their own modelling code")
    cache: Path = Field(default_factory=default_cache_dir, description="artefact cache (env EMBEDSERVE_CACHE)")
    resume: Path | None = Field(None, description="an advise directory to continue: finished candidates are kept")
    seed: int = Field(0, description="seed of samples, request sizes and arrivals")
    output: Path = Field(Path("reports"), description="parent directory of the run's directory")

    @field_validator("inputs_per_request")
    @classmethod
    def _inputs_range(cls, value: str) -> str:
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value)
        if not match or int(match[1]) < 1 or (match[2] and int(match[2]) < int(match[1])):
            raise ValueError(f"not a number or a range low-high of inputs: {value!r} (examples: 1, 1-16)")
        return value

    @property
    def inputs_range(self) -> tuple[int, int]:
        low, _, high = self.inputs_per_request.partition("-")
        return int(low), int(high or low)


class AdviseCompareSettings(SettingsBase):
    """`embedserve advise compare DIR...`: advise runs from different machines, ranked together."""

    runs: CliPositionalArg[list[Path]] = Field(description="advise directories, one per machine")
