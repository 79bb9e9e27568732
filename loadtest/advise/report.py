"""advise's answer three ways: `advice.json` (machine-readable), a ranked table in the terminal, and `report.html`
(one page, no network: the ranking, Pareto plots of quality against cost and against rate, each candidate's
p99-against-rate curve, the environment)."""

from __future__ import annotations

import html
from dataclasses import asdict
from pathlib import Path

from loadtest.advise.economics import Outcome, outcome_from_dict
from loadtest.advise.speed import SearchPlan
from loadtest.advise.workload import Workload
from loadtest.report.page import PAGE_STYLE, html_table
from loadtest.report.svg import PALETTE, Series, chart
from loadtest.settings import AdviseSettings


def one_line(outcome: Outcome) -> str:
    if outcome.rejected and not outcome.quality:
        return outcome.rejected
    quality = f"overlap {outcome.quality.top10_overlap:.3f}, min cosine {outcome.quality.min_cosine:.4f}"
    speed = outcome.speed
    if speed is None:
        return f"{quality}; {outcome.rejected}"
    rate = f"{speed.max_rate:g} req/s within the objective" if speed.max_rate else "no rate held the objective"
    rounds = ", ".join(f"{r:g}" if r else "-" for r in speed.rounds)
    return f"{quality}; {rate} (rounds: {rounds}{'' if speed.stable else '; unstable'})"


def advice_document(
    settings: AdviseSettings,
    workload: Workload,
    ranked: list[Outcome],
    chosen: Outcome | None,
    plans: dict[str, SearchPlan],
    machine: dict,
    interrupted: bool,
    files: dict[str, Path],
    levers: list[str],
) -> dict:
    return {
        "objective": {
            "rate": settings.rate,
            "inputs_per_request": settings.inputs_per_request,
            "slo_p99_ms": settings.slo_p99_ms,
            "min_overlap": settings.min_overlap,
            "min_cosine": settings.min_cosine,
            "headroom": settings.headroom,
            "price_per_hour": settings.price_per_hour,
        },
        "workload": {
            "source": workload.source,
            "documents": len(workload.documents),
            "queries": len(workload.queries),
            "labelled_queries": len(workload.qrels),
        },
        "environment": machine,
        "plans": {name: asdict(plan) for name, plan in plans.items()},
        "candidates": [asdict(outcome) for outcome in ranked],
        "recommended": chosen.name if chosen else None,
        "files": {name: str(path) for name, path in files.items()},
        "levers": levers,
        "interrupted": interrupted,
    }


def outcomes_of(advice: dict) -> list[Outcome]:
    return [outcome_from_dict(data) for data in advice["candidates"]]


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


COLUMNS = [
    "candidate",
    "overlap",
    "min cos",
    "max req/s",
    "p99 ms",
    "tokens/s",
    "cores",
    "RSS MB",
    "replicas",
    "cost/h",
    "per 1M tok",
    "per 1M docs",
    "GB/1M docs",
]


def storage(economics) -> str:
    """float32 vectors of a million documents, full size, and the smallest Matryoshka size the model offers."""
    sizes = sorted(economics.storage_gb_per_million_documents.items())
    (small_dims, small), (_, full) = sizes[0], sizes[-1]
    return f"{full:.2f}" + (f" ({small_dims}d: {small:.2f})" if len(sizes) > 1 else "")


def row(outcome: Outcome, machine: str = "") -> list[str]:
    q, s, e = outcome.quality, outcome.speed, outcome.economics
    rate = "-"
    if s and s.max_rate:
        rate = fmt(s.max_rate) + ("" if s.stable else " (unstable)")
    return [
        outcome.name + (f" @ {machine}" if machine else ""),
        f"{q.top10_overlap:.3f}" if q else "-",
        f"{q.min_cosine:.4f}" if q else "-",
        rate,
        fmt(s.p99_ms) if s else "-",
        fmt(s.tokens_per_s) if s and s.max_rate else "-",
        fmt(e.replica_cores) if e else "-",
        fmt(s.memory_mb) if s and s.memory_mb else "-",
        str(e.replicas) if e else "-",
        fmt(e.cost_per_hour) if e else "-",
        fmt(e.cost_per_million_tokens) if e else "-",
        fmt(e.cost_per_million_documents) if e else "-",
        storage(e) if e else "-",
    ]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([line(header), "-" * (sum(widths) + 2 * len(widths) - 2), *map(line, rows)])


def cost_unit(outcomes: list[Outcome]) -> str:
    return next((o.economics.cost_unit for o in outcomes if o.economics), "core-hours")


def objective_line(objective: dict) -> str:
    return (
        f"{objective['rate']:g} req/s of {objective['inputs_per_request']} input(s) each, p99 <= "
        f"{objective['slo_p99_ms']:g} ms, {objective['headroom']:.0%} headroom; quality: top-10 overlap >= "
        f"{objective['min_overlap']:g}, min cosine >= {objective['min_cosine']:g} against fp32"
    )


def terminal(advice: dict) -> str:
    outcomes = outcomes_of(advice)
    objective, environment = advice["objective"], advice["environment"]
    accepted = [o for o in outcomes if o.accepted]
    lines = [
        f"CPU: {environment['cpu']}, {environment['cpu_count']} cores, {', '.join(environment['instruction_sets'])}"
        + (f"; GPU: {', '.join(environment['gpus'])}" if environment["gpus"] else ""),
        f"texts: {advice['workload']['source']}",
        f"objective: {objective_line(objective)}",
        "",
        f"meet both ({len(accepted)}), cheapest first; cost in {cost_unit(outcomes)}:",
        text_table(COLUMNS, [row(o) for o in accepted]) if accepted else "  none",
    ]
    rejected = [o for o in outcomes if not o.accepted]
    if rejected:
        lines += ["", f"rejected ({len(rejected)}), closest first:"]
        lines += [f"  {o.name}: {o.rejected}" for o in rejected]
    recommended = next((o for o in outcomes if o.name == advice["recommended"]), None)
    lines.append("")
    if recommended:
        check = recommended.verification
        lines.append(
            f"RECOMMENDED: {recommended.name} x {recommended.economics.replicas} replica(s), "
            f"{recommended.economics.replica_cores:g} cores each; verified: p99 {check['p99_ms']:.1f} ms at "
            f"{check['rate']:g} req/s per replica for {check['seconds']:.0f} s (objective {objective['slo_p99_ms']:g} "
            f"ms), goodput {check['goodput_rate']:.2f} req/s of {check['requests']} requests"
        )
        lines += [f"  {name}: {path}" for name, path in advice["files"].items()]
    else:
        lines.append(
            "NO RECOMMENDATION: "
            + (
                "the run was interrupted before verification"
                if advice["interrupted"]
                else "no candidate met both bars and passed its verification"
            )
        )
        lines += [f"  would help: {lever}" for lever in advice["levers"]]
    return "\n".join(lines)


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats on both: lower cost (x) and higher quality (y)."""
    front, best = [], -1.0
    for x, y, tip in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y, tip))
            best = y
    return front


def cost_point(outcome: Outcome, unit: str) -> tuple[float, float, str]:
    cost, overlap = outcome.economics.cost_per_million_tokens, outcome.quality.top10_overlap
    return cost, overlap, f"{outcome.name}: {cost:.3g} {unit} per 1M tokens, overlap {overlap:.3f}"


def rate_point(outcome: Outcome) -> tuple[float, float, str]:
    rate, overlap = outcome.speed.max_rate, outcome.quality.top10_overlap
    return rate, overlap, f"{outcome.name}: {rate:g} req/s, overlap {overlap:.3f}"


def curve(outcome: Outcome, color: str) -> Series:
    """Every cell of the candidate's rate search: rate, p99."""
    points = []
    for cell in outcome.speed.curve:
        if cell["p99_ms"]:
            tip = f"{outcome.name} round {cell['round']}: {cell['rate']:g} req/s, p99 {cell['p99_ms']:.1f} ms"
            points.append((cell["rate"], cell["p99_ms"], tip + ("" if cell["held"] else " (broke)")))
    return Series(outcome.name, points, line=True, color=color)


def charts(outcomes: list[Outcome], slo_ms: float, min_overlap: float, unit: str) -> list[str]:
    """Each candidate keeps its colour in every chart."""
    colors = {o.name: PALETTE[index % len(PALETTE)] for index, o in enumerate(outcomes)}
    measured = [o for o in outcomes if o.quality and o.speed and o.speed.max_rate and o.economics]
    cost_points = [cost_point(o, unit) for o in measured]
    overlap, bar = "top-10 overlap with fp32", (min_overlap, f"quality bar {min_overlap:g}")
    return [
        chart(
            f"Quality against cost ({unit} per 1M tokens)",
            f"{unit} per 1M tokens (one replica at its highest sustainable rate)",
            overlap,
            [Series("Pareto front", pareto(cost_points), line=True, color="#999")]
            + [Series(o.name, [point], color=colors[o.name]) for o, point in zip(measured, cost_points, strict=True)],
            hline=bar,
        ),
        chart(
            "Quality against the highest sustainable rate",
            "requests/s per replica with p99 within the objective",
            overlap,
            [Series(o.name, [rate_point(o)], color=colors[o.name]) for o in measured],
            hline=bar,
        ),
        chart(
            "p99 latency against arrival rate, every search cell",
            "arrival rate (requests/s, open loop)",
            "p99 (ms)",
            [curve(o, colors[o.name]) for o in outcomes if o.speed],
            x_log=True,
            y_log=True,
            hline=(slo_ms, f"objective {slo_ms:g} ms"),
        ),
    ]


STYLE = """
pre.verdict { white-space: pre-wrap; background: #f6f8fa; padding: 1rem; }
table.facts td { text-align: left; }
"""


def write_page(run_dir: Path, advice: dict) -> Path:
    outcomes = outcomes_of(advice)
    environment, objective = advice["environment"], advice["objective"]
    unit = cost_unit(outcomes)
    summary = html.escape(terminal(advice).split("\n\n")[-1])
    price = objective["price_per_hour"]
    facts = [
        ["texts", advice["workload"]["source"]],
        ["objective", objective_line(objective)],
        ["cost", f"in {unit}" + (f" (the machine at {price:g}/h)" if price else "")],
        [
            "CPU",
            f"{environment['cpu']} ({environment['cpu_count']} cores): {', '.join(environment['instruction_sets'])}",
        ],
        ["GPU", ", ".join(environment["gpus"]) or "none"],
        ["versions", ", ".join(f"{k} {v}" for k, v in environment["packages"].items())],
        ["git commit", environment.get("git_commit") or "-"],
        ["started", environment["started_at"]],
    ]
    cuts = sorted({cut for plan in advice["plans"].values() for cut in plan["cuts"]})
    parts = [
        f"<h1>embedserve advise {html.escape(run_dir.name)}</h1>",
        f'<pre class="verdict">{summary}</pre>',
        html_table(["", ""], facts).replace("<table>", '<table class="facts">'),
        "<h2>Ranking</h2>",
        f'<p class="note">Meeting both bars first, cheapest for the rate; cost in {html.escape(unit)}. Marked: '
        "rejected, with the reason below.</p>",
        html_table(
            [*COLUMNS, "why not"],
            [[*row(o), o.rejected or ""] for o in outcomes],
            [not o.accepted for o in outcomes],
        ),
        "<h2>Plots</h2>",
        '<p class="note">Hover a point for its values.</p>',
        *charts(outcomes, objective["slo_p99_ms"], objective["min_overlap"], unit),
    ]
    if cuts:
        parts += ["<h2>What the budget cut</h2><ul>", *(f"<li>{html.escape(c)}</li>" for c in cuts), "</ul>"]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>embedserve advise {html.escape(run_dir.name)}"
        f"</title><style>{PAGE_STYLE}{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = run_dir / "report.html"
    path.write_text(page)
    return path
