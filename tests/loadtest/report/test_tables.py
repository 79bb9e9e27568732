"""The report's tables, from cells as a sweep writes them."""

from __future__ import annotations

from loadtest.report.tables import comparison_rows, ratio_rows


def test_comparison_marks_a_slower_cell_as_a_regression():
    cell = {
        "backend": "onnx",
        "profile": "short",
        "batch_size": 8,
        "concurrency": 4,
        "load": "closed",
        "inputs_per_s": 100.0,
        "p99_ms": 50.0,
    }
    slower = {**cell, "inputs_per_s": 80.0}
    later_tail = {**cell, "p99_ms": 60.0}
    steady = {**cell, "inputs_per_s": 95.0, "p99_ms": 52.0}
    assert [bad for _, bad in comparison_rows([slower], [cell], 10)] == [True]
    assert [bad for _, bad in comparison_rows([later_tail], [cell], 10)] == [True]
    assert [bad for _, bad in comparison_rows([steady], [cell], 10)] == [False]


def test_ratios_are_to_torch_in_the_same_cell_and_open_loop_cells_are_their_own_load():
    def cell(backend: str, inputs_per_s: float, load: str = "closed", rate: float | None = None) -> dict:
        return {
            "backend": backend,
            "profile": "short",
            "batch_size": 1,
            "concurrency": 8 if load == "closed" else 0,
            "rate": rate,
            "load": load,
            "inputs_per_s": inputs_per_s,
        }

    cells = [cell("torch", 100.0), cell("onnx", 150.0), cell("torch", 30.0, "open", 30), cell("onnx", 30.0, "open", 30)]
    base, rows = ratio_rows(cells, ["torch", "onnx"])
    assert base == "torch"
    assert rows == [["short", "1", "8 users", "1.00x", "1.50x"], ["short", "1", "30 req/s", "1.00x", "1.00x"]]
