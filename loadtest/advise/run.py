"""`embedserve advise`: per candidate, quality on the user's texts against the fp32 reference (in a child process),
then speed served alone from its own embedserve.yaml (the open-loop rate search, repeated); then the ranking, the
verification of the first candidate that meets both bars (the next one when it fails), the report and the files.

Each candidate's result is saved as soon as it is measured (candidates/<name>.json), so a stopped run keeps it,
`--resume DIR` goes on from there, and Ctrl-C still writes the report from what was measured.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from loadtest.advise import report
from loadtest.advise.candidates import Candidate, Embedded, candidates, embed_workload
from loadtest.advise.deployables import serve_config, write_deployables, write_serve_config
from loadtest.advise.economics import Outcome, economics, judge, levers, outcome_from_dict, rank
from loadtest.advise.plan import CELL_OVERHEAD_S, plan_search
from loadtest.advise.quality import measure_quality
from loadtest.advise.speed import SearchPlan, Verification, measure_speed, serve, verify
from loadtest.advise.workload import InputError, Workload, load_workload
from loadtest.probe import fingerprint
from loadtest.probe.environment import describe_machine
from loadtest.processes import in_child
from loadtest.settings import AdviseSettings
from server.engine import resolve_device
from server.settings import EngineSettings

# Settings a resumed run must share with the run it resumes: its finished candidates were measured under them.
RESUME_KEYS = ("corpus", "queries", "qrels", "inputs_per_request", "slo_p99_ms", "max_documents", "seed", "max_tokens")
FIRST_GUESS_FIXED_S = (
    90.0  # a candidate's time outside its rate search (load, quality, server start) before one is seen
)
VERIFY_TRIES = 3


def engine_settings(settings: AdviseSettings, candidate: Candidate) -> EngineSettings:
    return EngineSettings(
        model=candidate.model,
        dtype=candidate.dtype,
        cache=settings.cache,
        max_tokens=settings.max_tokens,
        trust_remote_code=settings.trust_remote_code,
    )


class AdviseRun:
    def __init__(self, settings: AdviseSettings, workload: Workload):
        self.settings, self.workload = settings, workload
        self.device = resolve_device("auto")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        self.dir = settings.resume or settings.output / f"advise-{stamp}"
        if settings.resume and not (settings.resume / "settings.json").exists():
            raise InputError(f"--resume {settings.resume}: no advise run there (its settings.json is missing)")
        (self.dir / "candidates").mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.candidates = candidates(settings.models, settings.backends, self.device)
        self.outcomes: dict[str, Outcome] = {}
        self.references: dict[str, Embedded] = {}
        self.plans: dict[str, SearchPlan] = {}
        self.fixed_seconds: list[float] = []
        self.interrupted = False
        self._check_resume()

    # --- saving and resuming -------------------------------------------------------------------------------------
    def _check_resume(self) -> None:
        settings_file = self.dir / "settings.json"
        now = json.loads(self.settings.model_dump_json(exclude={"resume", "api_key"}))
        if self.settings.resume:
            before = json.loads(settings_file.read_text())
            changed = [key for key in RESUME_KEYS if before.get(key) != now.get(key)]
            if changed:
                raise InputError(
                    f"--resume {self.dir}: that run measured with other {', '.join(changed)} "
                    f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)}); start a new run instead"
                )
            for path in sorted((self.dir / "candidates").glob("*.json")):
                outcome = outcome_from_dict(json.loads(path.read_text()))
                self.outcomes[outcome.name] = outcome
            print(f"resuming {self.dir}: {len(self.outcomes)} candidates already measured", file=sys.stderr)
        settings_file.write_text(json.dumps(now, indent=2))

    def work_dir(self, name: str) -> Path:
        """A candidate's own folder: its embedserve.yaml, server logs and search cells (its result sits beside it)."""
        return self.dir / "candidates" / name.replace("/", "__")

    def save(self, outcome: Outcome) -> None:
        self.outcomes[outcome.name] = outcome
        work = self.work_dir(outcome.name)  # a model name may hold dots (Qwen3-Embedding-0.6B): no with_suffix
        (work.parent / f"{work.name}.json").write_text(json.dumps(asdict(outcome), indent=2))

    # --- one candidate --------------------------------------------------------------------------------------------
    def reference(self, model: str) -> Embedded:
        """The same model in fp32 on torch: the quality reference, computed once per model."""
        if model not in self.references:
            self.references[model] = in_child(
                embed_workload,
                engine_settings(self.settings, Candidate(model, "torch", "float32")),
                "torch",
                self.workload,
            )
        return self.references[model]

    def measure(self, candidate: Candidate, plan: SearchPlan) -> Outcome:
        settings, workload = self.settings, self.workload
        outcome = Outcome(candidate.name, candidate.model, candidate.backend, candidate.dtype)
        work = self.work_dir(candidate.name)
        config_path = write_serve_config(work / "embedserve.yaml", serve_config(candidate, settings, self.device))
        try:
            reference = self.reference(candidate.model)
            embedded = in_child(embed_workload, engine_settings(settings, candidate), candidate.backend, workload)
        except Exception as error:  # noqa: BLE001 - reported with its reason; the other candidates still run
            outcome.rejected = f"failed to load: {type(error).__name__}: {error}"
            return outcome
        fingerprint.save(self.dir / fingerprint.FILE, {candidate.name: embedded.fingerprint})
        outcome.device, outcome.dimensions = embedded.device, embedded.dimensions
        outcome.matryoshka_dimensions = list(embedded.matryoshka_dimensions)
        outcome.tokens_per_document, outcome.peak_rss_in_process_mb = embedded.tokens_per_document, embedded.peak_rss_mb
        outcome.quality = measure_quality(
            workload, embedded.documents, embedded.queries, reference.documents, reference.queries
        )
        # Half the in-process pace, in requests of the user's mean size: the search doubles or halves from there.
        mean_inputs = sum(settings.inputs_range) / 2
        start_rate = max(0.1, round(embedded.inputs_per_s / mean_inputs / 2, 2))
        try:
            server = serve(config_path, settings.cache, work / "server.log")
        except RuntimeError as error:
            outcome.rejected = f"failed to serve: {error}"
            return outcome
        try:
            outcome.speed = measure_speed(
                server.url, candidate.backend, workload, settings.inputs_range, settings.slo_p99_ms, start_rate, plan,
                settings.tolerance, work, settings.seed,
            )  # fmt: skip
        finally:
            server.stop()
        return outcome

    def measure_all(self) -> None:
        todo = [c for c in self.candidates if c.name not in self.outcomes]
        reserve = (self.settings.verify_seconds + 15) * VERIFY_TRIES  # verification, a server start each
        for index, candidate in enumerate(todo):
            left = self.settings.budget - (time.monotonic() - self.started) - reserve
            fixed = sum(self.fixed_seconds) / len(self.fixed_seconds) if self.fixed_seconds else FIRST_GUESS_FIXED_S
            plan = plan_search(max(0.0, left / (len(todo) - index) - fixed))
            self.plans[candidate.name] = plan
            print(
                f"\n[{index + 1}/{len(todo)}] {candidate.name}: quality, then the rate search (rounds: at most "
                f"{plan.max_rounds}, cells of {plan.duration:g} s); ~{max(0.0, left + reserve) / 60:.1f} min of the "
                "budget left" + (f"; cut: {'; '.join(plan.cuts)}" if plan.cuts else ""),
                file=sys.stderr,
                flush=True,
            )
            began = time.monotonic()
            outcome = self.measure(candidate, plan)
            cells = len(outcome.speed.curve) if outcome.speed else 0
            searching = cells * (plan.warmup + plan.duration + CELL_OVERHEAD_S)
            self.fixed_seconds.append(max(0.0, time.monotonic() - began - searching))
            self.save(outcome)
            print(f"  {candidate.name}: {report.one_line(outcome)}", file=sys.stderr, flush=True)

    # --- deciding ------------------------------------------------------------------------------------------------
    def ranked(self) -> list[Outcome]:
        settings = self.settings
        machine = describe_machine()
        for outcome in self.outcomes.values():
            judge(outcome, settings.min_overlap, settings.min_cosine, settings.slo_p99_ms)
            if not outcome.rejected and outcome.speed and outcome.speed.max_rate:
                outcome.economics = economics(
                    outcome.speed,
                    settings.rate,
                    settings.headroom,
                    outcome.tokens_per_document,
                    sorted({outcome.dimensions, *outcome.matryoshka_dimensions}, reverse=True),
                    settings.price_per_hour,
                    machine["cpu_count"],
                    gpus=len(machine["gpus"]) if outcome.device.startswith("cuda") else 0,
                )
        return rank(list(self.outcomes.values()), settings.min_overlap, settings.slo_p99_ms)

    def verify(self, outcome: Outcome) -> Verification:
        """Serves the candidate from its embedserve.yaml and loads it at the rate each replica will get."""
        work = self.work_dir(outcome.name)
        per_replica = self.settings.rate / outcome.economics.replicas
        print(
            f"\nverifying {outcome.name}: {per_replica:g} req/s (the rate per replica) for "
            f"{self.settings.verify_seconds:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        server = serve(work / "embedserve.yaml", self.settings.cache, work / "verify-server.log")
        try:
            return verify(
                server.url, outcome.backend, self.workload, self.settings.inputs_range, self.settings.slo_p99_ms,
                per_replica, self.settings.verify_seconds, work / "verify", self.settings.seed,
            )  # fmt: skip
        finally:
            server.stop()


def choose(ranked: list[Outcome], verify_one: Callable[[Outcome], Verification], tries: int) -> Outcome | None:
    """The first accepted candidate whose verification passes; each one that fails is rejected with the reason,
    and the next is verified, `tries` at most. None: nothing verified, so nothing is recommended."""
    for outcome in [o for o in ranked if o.accepted][:tries]:
        try:
            check = verify_one(outcome)
        except RuntimeError as error:  # the server did not start: the candidate cannot be recommended
            outcome.verification = {"passed": False, "why": str(error)}
            outcome.rejected = f"verification failed: {error}"
            continue
        outcome.verification = asdict(check)
        if check.passed:
            return outcome
        outcome.rejected = f"verification failed: {check.why}"
    return None


def run_advise(settings: AdviseSettings) -> Path:
    try:
        workload = load_workload(
            settings.corpus, settings.queries, settings.qrels, settings.max_documents, settings.seed
        )
        run = AdviseRun(settings, workload)
    except InputError as error:
        raise SystemExit(f"embedserve advise: {error}") from None
    print(
        f"advise: {len(run.candidates)} candidates ({', '.join(c.name for c in run.candidates)}) on {workload.source}; "
        f"{settings.rate:g} req/s of {settings.inputs_per_request} input(s) each, p99 <= {settings.slo_p99_ms:g} ms; "
        f"budget {settings.budget / 60:.0f} min; results in {run.dir}",
        file=sys.stderr,
        flush=True,
    )
    chosen = None
    try:
        run.measure_all()
        ranked = run.ranked()
        chosen = choose(ranked, run.verify, VERIFY_TRIES)
    except KeyboardInterrupt:
        run.interrupted = True
        print("\ninterrupted: the report is written from what was measured", file=sys.stderr)
        ranked = run.ranked()
    ranked = rank(ranked, settings.min_overlap, settings.slo_p99_ms)  # a failed verification moves a candidate down
    files = {}
    if chosen is not None:
        replicas, speed = chosen.economics.replicas, chosen.speed
        config = serve_config(Candidate(chosen.model, chosen.backend, chosen.dtype), settings, run.device)
        files = write_deployables(
            run.dir / "deploy", config, replicas, speed.cores, speed.memory_mb, run.device.startswith("cuda")
        )
    advice = report.advice_document(
        settings, workload, ranked, chosen, run.plans, describe_machine(), run.interrupted, files,
        levers(ranked, settings.inputs_range, run.device.startswith("cuda")) if chosen is None else [],
    )  # fmt: skip
    (run.dir / "advice.json").write_text(json.dumps(advice, indent=2))
    page = report.write_page(run.dir, advice)
    print("\n" + report.terminal(advice))
    print(f"\nadvice: {run.dir / 'advice.json'}; report: {page}")
    return run.dir
