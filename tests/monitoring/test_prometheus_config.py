"""promtool on the shipped Prometheus configuration and alert rules, including the rules' unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import require_tool

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"


def promtool(*args: str) -> str:
    path = require_tool("promtool", "`make test` installs Debian's prometheus package (needs apt)")
    result = subprocess.run([path, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_rules_are_valid():
    assert "7 rules found" in promtool("check", "rules", "alerts.yml")


def test_alert_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
