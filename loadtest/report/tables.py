"""The report's tables, as rows of strings: ratios between backends of one run, the comparison with a baseline run,
the maximum sustainable rates, every cell."""

from __future__ import annotations

import statistics

import numpy as np

from loadtest.report.cells import load_label, load_order, ordered


def ratio_rows(cells: list[dict], backends: list[str]) -> tuple[str, list[list[str]]]:
    """inputs/s of every backend over the baseline backend (torch when present), cell by cell, same run."""
    base = "torch" if "torch" in backends else backends[0]
    by_key = {(c["backend"], c["profile"], c["batch_size"], load_label(c)): c for c in cells}
    shapes = {(c["profile"], c["batch_size"], load_order(c)): load_label(c) for c in cells}
    rows = []
    for (profile, batch, _), load in sorted(shapes.items()):
        reference = by_key.get((base, profile, batch, load))
        if not reference or not reference["inputs_per_s"]:
            continue
        row = [profile, str(batch), load]
        for backend in backends:
            cell = by_key.get((backend, profile, batch, load))
            row.append(f"{cell['inputs_per_s'] / reference['inputs_per_s']:.2f}x" if cell else "-")
        rows.append(row)
    return base, rows


def comparison_rows(cells: list[dict], baseline: list[dict], regression_pct: float) -> list[tuple[list[str], bool]]:
    """Cells both runs share: throughput and p99 change; a cell is a regression when either worsens too much."""
    key = lambda c: (c["backend"], c["profile"], c["batch_size"], load_label(c))  # noqa: E731
    before = {key(c): c for c in baseline}
    rows = []
    for cell in cells:
        old = before.get(key(cell))
        if not old or not old["inputs_per_s"] or not old["p99_ms"]:
            continue
        throughput = 100 * (cell["inputs_per_s"] / old["inputs_per_s"] - 1)
        p99 = 100 * (cell["p99_ms"] / old["p99_ms"] - 1)
        regression = throughput < -regression_pct or p99 > regression_pct
        rows.append(
            (
                [
                    *map(str, key(cell)),
                    f"{old['inputs_per_s']:.1f}",
                    f"{cell['inputs_per_s']:.1f}",
                    f"{throughput:+.1f}%",
                    f"{old['p99_ms']:.0f}",
                    f"{cell['p99_ms']:.0f}",
                    f"{p99:+.1f}%",
                ],
                regression,
            )
        )
    return rows


CELL_COLUMNS = [
    ("backend", "backend"),
    ("profile", "profile"),
    ("batch_size", "batch"),
    (load_label, "load"),
    ("offered_rate", "offered req/s"),
    ("requests_per_s", "req/s"),
    ("goodput_rate", "goodput req/s"),
    ("inputs_per_s", "inputs/s"),
    ("tokens_per_s", "tokens/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("max_ms", "max ms"),
    ("queue_wait_ms", "queue ms"),
    ("inference_ms", "inference ms"),
    ("inputs_per_forward", "inputs/pass"),
    ("worker_rss_peak_mb", "RSS MB"),
    ("worker_cores", "worker cores"),
    ("http_cores", "HTTP cores"),
    ("other_cores", "other cores"),
    ("shed", "shed (503)"),
    ("failures", "failures"),
    ("client_cpu_pct", "load generator CPU %"),
    ("generator_behind_pct", "generator behind %"),
]


def cell_value(cell: dict, key) -> str:
    return format_value(key(cell) if callable(key) else cell.get(key))


def max_rate_rows(saturation: list[dict]) -> list[list[str]]:
    """The maximum sustainable arrival rate of each backend, and its ratio to the first backend's, per shape."""
    searches = [s for s in saturation if s["load"] == "open"]
    rows = []
    for profile, batch in ordered((s["profile"], s["batch_size"]) for s in searches):
        group = [s for s in searches if (s["profile"], s["batch_size"]) == (profile, batch)]
        base = group[0]
        for search in group:
            ratio = (
                f"{search['best_rate'] / base['best_rate']:.2f}x" if search["best_rate"] and base["best_rate"] else "-"
            )
            rows.append(
                [
                    search["backend"],
                    profile,
                    str(batch),
                    format_value(search["slo_ms"]),
                    format_value(search["best_rate"]),
                    f"{ratio} of {base['backend']}",
                    format_value(search["best_inputs_per_s"]),
                    format_value(search["best_p99_ms"]),
                    search["stopped_because"],
                ]
            )
    return rows


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


PEER_HEADER = [
    "profile",
    "batch",
    "load",
    "ours",
    "peer",
    "ours inputs/s",
    "peer inputs/s",
    "ratio",
    "range",
    "ours p99 ms",
    "peer p99 ms",
    "parity",
]


def peer_rows(cells: list[dict], vectors: dict[str, np.ndarray]) -> list[tuple[list[str], bool]]:
    """Each of our backends against each peer (--peer), per shape: medians over the rounds; the ratio (ours over the
    peer's inputs/s) is the median of the rounds' own ratios, with their range. Marked: a range that holds 1, where
    the difference is within the run's drift. Parity: the lowest cosine between the two's vectors of the fingerprint
    texts (1.0: the same model, computed alike)."""
    rounds_of: dict[tuple, dict[int, dict]] = {}
    for cell in cells:
        key = (cell["backend"], cell["profile"], cell["batch_size"], load_order(cell))
        rounds_of.setdefault(key, {})[cell.get("round", 0)] = cell
    peers = list(dict.fromkeys(c["backend"] for c in cells if c.get("peer")))
    ours = list(dict.fromkeys(c["backend"] for c in cells if not c.get("peer")))
    shapes = {(c["profile"], c["batch_size"], load_order(c)): load_label(c) for c in cells}
    rows = []
    for (profile, batch, order), load in sorted(shapes.items()):
        for backend in ours:
            for peer in peers:
                mine, theirs = (
                    rounds_of.get((backend, profile, batch, order)),
                    rounds_of.get((peer, profile, batch, order)),
                )
                if mine and theirs:
                    row, within_drift = compare_rounds(mine, theirs, vectors.get(backend), vectors.get(peer))
                    rows.append(([profile, str(batch), load, backend, peer, *row], within_drift))
    return rows


def compare_rounds(
    mine: dict[int, dict], theirs: dict[int, dict], my_vectors: np.ndarray | None, their_vectors: np.ndarray | None
) -> tuple[list[str], bool]:
    """peer_rows' figures of one shape, from the two sides' cells by round."""
    rounds = sorted(set(mine) & set(theirs))
    ratios = [mine[r]["inputs_per_s"] / theirs[r]["inputs_per_s"] for r in rounds if theirs[r]["inputs_per_s"]]

    def median(side: dict[int, dict], key: str) -> str:
        return format_value(statistics.median(side[r][key] for r in rounds))

    parity = (
        f"{float((my_vectors * their_vectors).sum(axis=1).min()):.6f}"
        if my_vectors is not None and their_vectors is not None
        else "-"
    )
    row = [
        median(mine, "inputs_per_s"),
        median(theirs, "inputs_per_s"),
        f"{statistics.median(ratios):.2f}x" if ratios else "-",
        f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-",
        median(mine, "p99_ms"),
        median(theirs, "p99_ms"),
        parity,
    ]
    return row, bool(ratios) and min(ratios) <= 1 <= max(ratios)
