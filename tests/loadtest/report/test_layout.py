"""The rendered-layout check itself, and the SVG charts the reports draw."""

from __future__ import annotations

import re

from loadtest.report.page import PAGE_STYLE, html_table
from loadtest.report.svg import Series, chart
from tests.loadtest.report.layout import rendered_problems

WIDE_ROW = [[f"a rather long cell value {i}" for i in range(20)]]


def page(body: str) -> str:
    return f"<!doctype html><html><head><style>{PAGE_STYLE}</style></head><body>{body}</body></html>"


def test_the_check_sees_a_table_past_the_page_and_a_title_outside_its_plot(tmp_path):
    bare_table = re.sub(r"</?div[^>]*>", "", html_table([str(i) for i in range(20)], WIDE_ROW))
    clipped = (
        '<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 100">'
        '<text x="-40" y="20" font-size="17">Latency vs concurrency (batch size 32; solid p99)</text></svg></figure>'
    )
    bad = tmp_path / "bad.html"
    bad.write_text(page(bare_table + clipped))
    problems, plots = rendered_problems(bad)
    assert plots == 1 and len(problems) == 2
    assert "TABLE" in problems[0] and "runs past the page" in problems[0]
    assert problems[1] == '"Latency vs concurrency (batch size 32; solid p99)" lies outside its plot'


def test_a_wide_table_scrolls_in_its_box_and_a_chart_keeps_its_text_inside(tmp_path):
    long_title = "p99 latency against arrival rate, every cell of every candidate's rate search, all rounds"
    series = [Series(f"candidate {i}", [(10.0 * (i + 1), 5.0 + i, "tip"), (20.0 * (i + 1), 8.0 + i, "tip")], line=True)
              for i in range(12)]  # fmt: skip
    good = tmp_path / "good.html"
    good.write_text(page(html_table([str(i) for i in range(20)], WIDE_ROW) + chart(long_title, "x", "y", series)))
    for width in (1280, 600):
        assert rendered_problems(good, width) == ([], 1)


def test_chart_points_carry_their_values_for_hovering():
    svg = chart("t", "x", "y", [Series("onnx", [(1.0, 2.0, "onnx: 1 req/s, p99 2 ms")])], hline=(3.0, "objective"))
    assert "<title>onnx: 1 req/s, p99 2 ms</title>" in svg and "<title>objective</title>" in svg
    assert "nothing measured" in chart("empty", "x", "y", [Series("none")])
