"""`embedserve advise compare DIR...`: advise runs made on different machines, ranked together, each candidate at
its own machine's price. The hardware choice comes from real runs on each machine, never from extrapolation."""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.advise.economics import Outcome
from loadtest.advise.report import COLUMNS, outcomes_of, row, text_table


class CompareError(ValueError):
    pass


def machine_label(environment: dict) -> str:
    return environment["gpus"][0].split(",")[0] if environment["gpus"] else environment["cpu"]


def compare(runs: list[Path]) -> str:
    adviced = []
    for run in runs:
        path = run / "advice.json"
        if not path.exists():
            raise CompareError(f"{run}: no advice.json (not an advise run, or one that has not finished)")
        adviced.append(json.loads(path.read_text()))
    objectives = {
        json.dumps({k: a["objective"][k] for k in ("rate", "inputs_per_request", "slo_p99_ms")}) for a in adviced
    }
    if len(objectives) > 1:
        raise CompareError(f"the runs were made for different objectives: {sorted(objectives)}")
    units = {o.economics.cost_unit for a in adviced for o in outcomes_of(a) if o.economics}
    if len(units) > 1:
        raise CompareError(
            f"costs in different units ({', '.join(sorted(units))}): run advise with --price-per-hour on every machine"
        )
    rows: list[tuple[Outcome, str]] = [
        (outcome, machine_label(a["environment"])) for a in adviced for outcome in outcomes_of(a) if outcome.accepted
    ]
    rows.sort(key=lambda pair: (pair[0].economics.cost_per_hour, pair[0].economics.cost_per_million_tokens))
    unit = units.pop() if units else "-"
    header = f"{len(rows)} setups meet the objective and the quality bar on {len(runs)} machines; cost in {unit}"
    return header + "\n" + text_table(COLUMNS, [row(outcome, machine) for outcome, machine in rows])
