"""A report as a person sees it: rendered by headless Chromium (Debian's `chromium`), and checked from the DOM that no
plot or table runs past the page and that every plot's text (its title first) lies inside the plot."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.helpers import require_tool

# Runs once the page has laid out; leaves what it found on <body> for --dump-dom to carry out.
PROBE = """<script>
window.addEventListener("load", () => {
  const problems = [];
  const page = document.body.getBoundingClientRect();
  const style = getComputedStyle(document.body);
  const left = page.left + parseFloat(style.paddingLeft), right = page.right - parseFloat(style.paddingRight);
  for (const element of document.querySelectorAll("figure, div.table, img, svg, pre, table")) {
    const box = element.getBoundingClientRect();
    const scroller = element.parentElement;  // a table may be wider than the page inside a box that scrolls
    if (element.tagName === "TABLE" && ["auto", "scroll"].includes(getComputedStyle(scroller).overflowX)) continue;
    if (box.left < left - 1 || box.right > right + 1) {
      problems.push(`${element.tagName} ${element.className.baseVal ?? element.className} runs past the page: ` +
        `${Math.round(box.left)}..${Math.round(box.right)} outside ${Math.round(left)}..${Math.round(right)}`);
    }
  }
  const plots = document.querySelectorAll("figure svg");
  for (const svg of plots) {
    const box = svg.getBoundingClientRect();
    const texts = [...svg.querySelectorAll("text")].filter((t) => t.textContent.trim());
    if (!texts.length) problems.push("a plot with no text: no title");
    for (const text of texts) {
      const r = text.getBoundingClientRect();
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1) {
        problems.push(`"${text.textContent.trim()}" lies outside its plot`);
      }
    }
  }
  document.body.dataset.problems = JSON.stringify(problems);
  document.body.dataset.plots = plots.length;
});
</script>"""


def rendered_problems(page: Path, width: int = 1000) -> tuple[list[str], int]:
    """(what overflows, how many plots) of `page` rendered `width` pixels wide."""
    chromium = require_tool("chromium", "`make test` installs it (apt: chromium)")
    probed = page.with_name(page.stem + ".probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom", probed.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    match = re.search(r'data-problems="([^"]*)"[^>]*data-plots="(\d+)"', dom.stdout)
    assert match, f"the page's probe did not run: {dom.stderr[-2000:]}"
    return json.loads(match[1].replace("&quot;", '"').replace("&amp;", "&")), int(match[2])
