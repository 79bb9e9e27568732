"""From figures to a decision: replicas and cost arithmetic, rejects with their reasons, the ranking, the budget's
plan, and verification that falls back to the next candidate."""

from __future__ import annotations

import math

import pytest

from loadtest.advise import candidates as candidates_module
from loadtest.advise.candidates import CPU_BACKENDS, Candidate, candidates
from loadtest.advise.economics import Outcome, Speed, economics, judge, levers, rank, replicas_needed
from loadtest.advise.plan import FULL, plan_search
from loadtest.advise.quality import QualityFigures
from loadtest.advise.report import storage
from loadtest.advise.run import choose
from loadtest.advise.speed import Verification, agree

GOOD = QualityFigures(min_cosine=0.999, mean_cosine=0.9995, top10_overlap=0.98)


def test_replicas_keep_the_headroom():
    assert replicas_needed(100, 130, 0.3) == 1  # 100 x 1.3 = 130: exactly one replica's maximum
    assert replicas_needed(100, 129, 0.3) == 2
    assert replicas_needed(100, 50, 0.0) == 2
    assert replicas_needed(0.5, 1000, 0.3) == 1


def test_cost_arithmetic_in_core_hours_and_in_money():
    speed = Speed(max_rate=40.0, tokens_per_s=2000.0, cores=1.1)
    # 1.1 cores -> 1.25 cores a replica; 100 req/s x 1.3 / 40 = 3.25 -> 4 replicas.
    in_cores = economics(speed, 100, 0.3, tokens_per_document=50, dimensions=[768, 256], price_per_hour=None,
                         machine_cores=8)  # fmt: skip
    assert (in_cores.replicas, in_cores.replica_cores, in_cores.cost_unit) == (4, 1.25, "core-hours")
    assert in_cores.cost_per_hour == pytest.approx(5.0)
    per_million = 1.25 / (2000 * 3600) * 1e6
    assert in_cores.cost_per_million_tokens == pytest.approx(per_million)
    assert in_cores.cost_per_million_documents == pytest.approx(per_million * 50)
    assert in_cores.storage_gb_per_million_documents == {768: pytest.approx(3.072), 256: pytest.approx(1.024)}
    assert storage(in_cores) == "3.07 (256d: 1.02)"  # the table's column: full size, and the smallest Matryoshka
    # $0.80 an hour for 8 cores: $0.10 a core-hour.
    in_money = economics(speed, 100, 0.3, 50, [768], price_per_hour=0.8, machine_cores=8)
    assert in_money.cost_unit == "$" and in_money.cost_per_hour == pytest.approx(4 * 1.25 * 0.1)
    on_gpu = economics(speed, 100, 0.3, 50, [768], price_per_hour=None, machine_cores=8, gpus=1)
    assert (on_gpu.cost_unit, on_gpu.replica_cores, on_gpu.cost_per_hour) == ("GPU-hours", 1.0, 4.0)


def outcome(name: str, overlap: float = 0.98, max_rate: float | None = 40.0, cores: float = 1.0, **speed) -> Outcome:
    quality = QualityFigures(0.999, 0.9995, overlap)
    return Outcome(name, "m", name, "auto", quality=quality, speed=Speed(max_rate=max_rate, tokens_per_s=1000,
                   cores=cores, **speed), tokens_per_document=40, dimensions=384)  # fmt: skip


def decide(outcomes: list[Outcome], rate: float = 100) -> list[Outcome]:
    for o in outcomes:
        judge(o, 0.95, 0.99, 100)
        if not o.rejected:
            o.economics = economics(o.speed, rate, 0.3, o.tokens_per_document, [o.dimensions], None, 8)
    return rank(outcomes, 0.95, 100)


def test_ranking_cheapest_first_then_rejects_closest_first_with_reasons():
    failed = Outcome("broken", "m", "broken", "auto", rejected="failed to load: ValueError: unknown backend")
    ranked = decide([
        outcome("fast-but-wide", max_rate=80, cores=2.0),  # 2 replicas x 2 cores = 4 core-hours/h
        outcome("slow", max_rate=30, cores=1.0),  # 5 replicas x 1 core = 5
        outcome("lean", max_rate=70, cores=0.9),  # 2 replicas x 1 core = 2
        outcome("int8", overlap=0.90),
        outcome("hopeless", max_rate=None, lowest_p99_ms=450, stopped_because="p99 450 ms above the SLO at 1 req/s"),
        outcome("unsure", max_rate=None, rounds=[60.0, None]),
        failed,
    ])  # fmt: skip
    assert [o.name for o in ranked[:3]] == ["lean", "fast-but-wide", "slow"]
    assert [o.economics.cost_per_hour for o in ranked[:3]] == [2.0, 4.0, 5.0]
    reasons = {o.name: o.rejected for o in ranked[3:]}
    assert reasons["int8"] == "quality below the bar: top-10 overlap 0.900 < 0.95 (by 0.050)"
    assert reasons["hopeless"].startswith("objective p99 <= 100 ms unreachable even at the lowest rate tried")
    assert "(best p99 450 ms)" in reasons["hopeless"] and "450 ms above the SLO" in reasons["hopeless"]
    assert reasons["unsure"].startswith("unstable: the rate search's rounds disagree (60 req/s, none)")
    assert reasons["broken"] == "failed to load: ValueError: unknown backend"
    # Closest first: int8 missed by 5%, hopeless by 350%, the one that never loaded last.
    assert ranked[3].name == "int8" and ranked[-1].name == "broken"


def test_levers_when_nothing_meets_the_objective():
    ranked = decide([outcome("torch", max_rate=None, lowest_p99_ms=300)])
    said = levers(ranked, (1, 16), has_gpu=False)
    assert any("fewer inputs per request (now up to 16)" in lever for lever in said)
    assert any("int8" in lever for lever in said) and any("GPU" in lever for lever in said)
    assert not any("fewer inputs" in lever for lever in levers(ranked, (1, 1), has_gpu=True))
    broken = Outcome("x", "m", "x", "auto", rejected="failed to load: OSError: no such model")
    assert levers([broken], (1, 1), has_gpu=False) == ["a candidate that loads: none did (each one's reason is above)"]


def test_rounds_agree_within_the_tolerance():
    assert agree(100, 90, 0.15) and not agree(100, 80, 0.15)
    assert agree(None, None, 0.15) and not agree(100, None, 0.15)


def test_the_plan_cuts_cells_then_rounds_to_fit_and_says_so():
    assert plan_search(3600) == FULL and not FULL.cuts
    shorter = plan_search(3 * 5 * (FULL.warmup + 6 + 3))
    assert shorter.max_rounds == 3 and 4 <= shorter.duration < FULL.duration
    assert any("cells of" in cut for cut in shorter.cuts)
    fewer = plan_search(2 * 5 * (1 + 4 + 3) + 1)
    assert fewer.max_rounds == 2 and any("at most 2 rounds" in cut for cut in fewer.cuts)
    tiny = plan_search(10)
    assert tiny.max_rounds == 1 and any("overrun" in cut for cut in tiny.cuts)
    for seconds in (60, 120, 300, 900):  # what it plans fits what it was given, whenever anything can
        plan = plan_search(seconds)
        if not any("overrun" in cut for cut in plan.cuts):
            assert plan.max_rounds * 5 * (plan.warmup + plan.duration + 3) <= seconds + 1e-6


def passed(rate: float) -> Verification:
    return Verification(rate, 30, 40.0, rate, int(rate * 30), True)


def test_a_failed_verification_falls_back_to_the_next_candidate():
    ranked = decide([outcome("first", max_rate=70, cores=0.9), outcome("second", max_rate=80, cores=2.0)])
    tried = []

    def verify(o: Outcome) -> Verification:
        tried.append(o.name)
        if o.name == "first":
            return Verification(50, 30, 180.0, 40.0, 1500, False, "p99 180 ms above the SLO at 50 req/s")
        return passed(50)

    chosen = choose(ranked, verify, tries=3)
    assert chosen.name == "second" and tried == ["first", "second"]
    assert ranked[0].rejected == "verification failed: p99 180 ms above the SLO at 50 req/s"
    assert ranked[0].verification["p99_ms"] == 180.0 and chosen.verification["passed"]
    assert [o.name for o in rank(ranked, 0.95, 100)] == ["second", "first"]


def test_nothing_verified_means_nothing_recommended():
    ranked = decide([outcome("a"), outcome("b"), outcome("c", max_rate=None, lowest_p99_ms=200)])

    def verify(o: Outcome) -> Verification:
        if o.name == "a":
            raise RuntimeError("backends failed to load: {'onnx': 'no artefact'}")
        return Verification(50, 30, 180.0, 40.0, 1500, False, "p99 180 ms above the SLO")

    assert choose(ranked, verify, tries=3) is None
    assert ranked[0].rejected.startswith("verification failed: backends failed to load")
    assert ranked[1].rejected == "verification failed: p99 180 ms above the SLO"


def test_a_candidate_that_sustains_nothing_has_infinite_cost_per_token():
    cost = economics(Speed(max_rate=5, tokens_per_s=0.0, cores=1), 1, 0.3, 10, [384], None, 2)
    assert math.isinf(cost.cost_per_million_tokens)


def test_candidates_are_every_setup_this_machine_runs_unless_named(monkeypatch):
    on_cpu = [c.backend for c in candidates(["m"], [], "cpu")]
    assert on_cpu[: len(CPU_BACKENDS)] == list(CPU_BACKENDS) and set(on_cpu) - set(CPU_BACKENDS) <= {
        "candle",
        "ort",
        "openvino",
    }
    for flags, bf16 in [({"avx2", "avx512_bf16"}, True), ({"avx2", "avx512_vnni"}, False)]:
        monkeypatch.setattr(candidates_module, "cpu_flags", lambda flags=flags: frozenset(flags))
        names = [c.name for c in candidates(["m"], [], "cpu")]
        assert ("m/openvino-bfloat16" in names) == bf16, names
    on_gpu = candidates(["org/a", "b"], [], "cuda:0")
    assert [c.name for c in on_gpu[:3]] == ["a/torch-float16", "a/torch-bfloat16", "a/onnx"] and len(on_gpu) == 6
    assert candidates(["m"], ["onnx-int8"], "cuda") == [Candidate("m", "onnx-int8", "auto")]
