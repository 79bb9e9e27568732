"""From measured figures to a decision: replicas for the rate, cost per hour, per million tokens and documents, vector
storage; then the ranking, cheapest first, and each rejected candidate's reason.

Cost is what a replica occupies: on a CPU, the cores its server used at its highest sustainable rate (rounded up to
a quarter core), priced as that share of the machine (--price-per-hour), else in core-hours; on a GPU, one GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loadtest.advise.quality import QualityFigures

FLOAT32_BYTES = 4


@dataclass
class Speed:
    """The open-loop rate search's answer for one replica, over its rounds."""

    max_rate: float | None  # requests/s with p99 within the objective; None: not even the lowest rate held
    rounds: list[float | None] = field(default_factory=list)
    stable: bool = False  # the last two rounds agreed within the tolerance
    p99_ms: float | None = None  # at max_rate
    lowest_p99_ms: float | None = None  # the best p99 seen at any rate (how close an unreachable objective came)
    tokens_per_s: float = 0.0
    inputs_per_s: float = 0.0
    cores: float = 0.0  # the whole server's cores at max_rate (worker, HTTP front, the rest)
    memory_mb: float = 0.0  # the whole server's peak RSS
    stopped_because: str = ""
    curve: list[dict] = field(default_factory=list)  # every cell: round, rate, p99_ms, held


@dataclass
class Economics:
    replicas: int
    replica_cores: float
    cost_unit: str  # "$", "core-hours" or "GPU-hours"
    cost_per_hour: float  # all replicas together
    cost_per_million_tokens: float  # one replica at its highest sustainable rate
    cost_per_million_documents: float
    storage_gb_per_million_documents: dict[int, float]  # float32 vectors, per offered dimension count


def replicas_needed(rate: float, max_rate: float, headroom: float) -> int:
    """Enough replicas that each runs at most 1/(1 + headroom) of its measured highest sustainable rate."""
    return max(1, math.ceil(rate * (1 + headroom) / max_rate - 1e-9))


def economics(
    speed: Speed,
    rate: float,
    headroom: float,
    tokens_per_document: float,
    dimensions: list[int],
    price_per_hour: float | None,
    machine_cores: int,
    gpus: int = 0,
) -> Economics:
    assert speed.max_rate, "economics of a candidate that sustains no rate"
    replicas = replicas_needed(rate, speed.max_rate, headroom)
    if gpus:
        occupied, whole, unit = 1.0, gpus, "GPU-hours"
    else:
        occupied, whole, unit = math.ceil(max(speed.cores, 0.25) * 4) / 4, machine_cores, "core-hours"
    per_unit = price_per_hour / whole if price_per_hour else 1.0
    replica_per_hour = occupied * per_unit
    per_million_tokens = replica_per_hour / (speed.tokens_per_s * 3600) * 1e6 if speed.tokens_per_s else math.inf
    return Economics(
        replicas=replicas,
        replica_cores=occupied,
        cost_unit="$" if price_per_hour else unit,
        cost_per_hour=replicas * replica_per_hour,
        cost_per_million_tokens=per_million_tokens,
        cost_per_million_documents=per_million_tokens * tokens_per_document,
        storage_gb_per_million_documents={dims: dims * FLOAT32_BYTES * 1e6 / 1e9 for dims in dimensions},
    )


@dataclass
class Outcome:
    """One candidate's whole result; `rejected` says why it is not recommended (empty: it meets both bars)."""

    name: str
    model: str
    backend: str
    dtype: str
    device: str = ""
    quality: QualityFigures | None = None
    speed: Speed | None = None
    economics: Economics | None = None
    tokens_per_document: float = 0.0
    dimensions: int = 0
    matryoshka_dimensions: list[int] = field(default_factory=list)
    peak_rss_in_process_mb: float = 0.0
    rejected: str = ""
    verification: dict | None = None

    @property
    def accepted(self) -> bool:
        return not self.rejected and self.economics is not None


def judge(outcome: Outcome, min_overlap: float, min_cosine: float, slo_ms: float) -> None:
    """Sets `rejected` from the figures (a load failure is set where it happened)."""
    if outcome.rejected:
        return
    if outcome.quality and (short := outcome.quality.shortfall(min_overlap, min_cosine)):
        outcome.rejected = f"quality below the bar: {short}"
    elif outcome.speed and not outcome.speed.max_rate and any(outcome.speed.rounds):
        found = ", ".join(f"{rate:g} req/s" if rate else "none" for rate in outcome.speed.rounds)
        outcome.rejected = f"unstable: the rate search's rounds disagree ({found}); give it more --budget"
    elif outcome.speed is None or not outcome.speed.max_rate:
        closest = outcome.speed.lowest_p99_ms if outcome.speed else None
        outcome.rejected = (
            f"objective p99 <= {slo_ms:g} ms unreachable even at the lowest rate tried"
            + (f" (best p99 {closest:.0f} ms)" if closest else "")
            + (f": {outcome.speed.stopped_because}" if outcome.speed and outcome.speed.stopped_because else "")
        )


def closeness(outcome: Outcome, min_overlap: float, slo_ms: float) -> float:
    """How near a rejected candidate came (0 = met it): the larger relative miss of quality and latency."""
    quality_miss = max(0.0, min_overlap - outcome.quality.top10_overlap) / min_overlap if outcome.quality else 1.0
    latency_miss = 0.0
    if outcome.speed is None:
        latency_miss = math.inf
    elif not outcome.speed.max_rate:
        latency_miss = ((outcome.speed.lowest_p99_ms or math.inf) - slo_ms) / slo_ms
    return max(quality_miss, latency_miss)


def rank(outcomes: list[Outcome], min_overlap: float, slo_ms: float) -> list[Outcome]:
    """Accepted first, cheapest for the rate (then per token, then best overlap); then rejected, closest first."""
    accepted = sorted(
        (o for o in outcomes if o.accepted),
        key=lambda o: (o.economics.cost_per_hour, o.economics.cost_per_million_tokens, -o.quality.top10_overlap),
    )
    rejected = sorted((o for o in outcomes if not o.accepted), key=lambda o: closeness(o, min_overlap, slo_ms))
    return accepted + rejected


def levers(outcomes: list[Outcome], inputs_range: tuple[int, int], has_gpu: bool) -> list[str]:
    """What would help when no candidate meets the bars."""
    advice = []
    slow = [o for o in outcomes if o.speed is not None and not o.speed.max_rate]
    if slow:
        if inputs_range[1] > 1:
            advice.append(
                f"fewer inputs per request (now up to {inputs_range[1]}): a request's latency grows with its inputs"
            )
        if not any("int8" in o.backend for o in slow):
            advice.append("an int8 backend (onnx-int8, openvino-int8), if its quality holds on your texts")
        if not has_gpu:
            advice.append("a GPU: run advise on a GPU machine and combine with `embedserve advise compare`")
        advice.append("a looser --slo-p99-ms, or a smaller model")
    if any(o.rejected.startswith("quality") for o in outcomes):
        advice.append("a non-quantised backend, or a lower --min-overlap / --min-cosine if your search tolerates it")
    if outcomes and all(o.rejected.startswith("failed to") for o in outcomes):
        advice.append("a candidate that loads: none did (each one's reason is above)")
    return advice


def outcome_from_dict(data: dict) -> Outcome:
    """An Outcome saved as JSON (a resumed run's finished candidates, `advise compare`'s runs)."""
    fields = dict(data)
    if fields.get("quality"):
        fields["quality"] = QualityFigures(**fields["quality"])
    if fields.get("speed"):
        fields["speed"] = Speed(**fields["speed"])
    if fields.get("economics"):
        economics_fields = dict(fields["economics"])
        economics_fields["storage_gb_per_million_documents"] = {
            int(dims): gb for dims, gb in economics_fields["storage_gb_per_million_documents"].items()
        }
        fields["economics"] = Economics(**economics_fields)
    return Outcome(**fields)
