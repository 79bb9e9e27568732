"""`embedserve advise` end to end on a tiny BERT and a small corpus: the first run is stopped with Ctrl-C after two
candidates (one measured, one that cannot load) and still writes its report; `--resume` measures only the last one,
ranks all three, verifies its choice under load and writes the files to deploy it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from cli import main
from corpus.texts import texts
from loadtest.probe import fingerprint
from tests.helpers import ROOT, export_in_this_process
from tests.loadtest.report.layout import rendered_problems
from tests.server.tiny_models import FAMILIES, build_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("advise")
    model = build_tiny_model(FAMILIES["bert"], root / "tiny-bert", minilm_dir)
    cache = export_in_this_process([model], root / "cache", backends=("onnx",))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(texts("variable", 80, seed=7)))
    return model, cache, corpus, root


def advise_command(tiny, *extra: str) -> list[str]:
    model, cache, corpus, root = tiny
    return [
        sys.executable, "-m", "cli", "advise", "--models", str(model), "--backends", "torch,onnx-int4,onnx",
        "--corpus", str(corpus), "--rate", "30", "--inputs-per-request", "1-4", "--slo-p99-ms", "250",
        "--budget", "2m", "--verify-seconds", "6", "--cache", str(cache), "--output", str(root / "runs"), *extra,
    ]  # fmt: skip


def test_interrupted_then_resumed_run_ranks_verifies_and_writes_deployable_files(tiny):
    model, _, _, root = tiny
    log = (root / "first.log").open("w")
    # Ctrl-C acts whatever the test runs under: a shell's background job ignores SIGINT, and its children inherit that.
    first = subprocess.Popen(
        advise_command(tiny),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(root.glob("runs/advise-*/candidates/*.json"))) < 2:
        assert first.poll() is None, (root / "first.log").read_text()
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # Ctrl-C, while the third candidate is being measured
    assert first.wait(120) == 0, (root / "first.log").read_text()
    (run,) = root.glob("runs/advise-*")
    stopped = json.loads((run / "advice.json").read_text())
    output = (root / "first.log").read_text()
    assert stopped["interrupted"] and stopped["recommended"] is None
    assert "NO RECOMMENDATION: the run was interrupted" in output and (run / "report.html").exists()
    measured = {c["backend"]: c for c in stopped["candidates"]}
    assert set(measured) == {"torch", "onnx-int4"}
    assert measured["onnx-int4"]["rejected"].startswith("failed to load: ValueError: unknown variant 'onnx-int4'")

    resumed = subprocess.run(advise_command(tiny, "--resume", str(run)), cwd=ROOT, capture_output=True, text=True)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert "2 candidates already measured" in output and "[1/1] tiny-bert/onnx" in output
    advice = json.loads((run / "advice.json").read_text())
    ranked = {c["backend"]: c for c in advice["candidates"]}
    assert list(ranked)[-1] == "onnx-int4" and not advice["interrupted"]
    for backend in ("torch", "onnx"):
        quality, speed = ranked[backend]["quality"], ranked[backend]["speed"]
        # torch fp32 is the reference's own computation; ONNX Runtime's fp32 graph is the same model.
        assert quality["min_cosine"] > 0.9999 and quality["top10_overlap"] > 0.95
        assert speed["curve"] and all(cell["rate"] > 0 for cell in speed["curve"])
    chosen = next(c for c in advice["candidates"] if c["name"] == advice["recommended"])
    check = chosen["verification"]
    assert check["passed"] and check["p99_ms"] <= 250 and check["requests"] > 0
    economics = chosen["economics"]
    assert economics["replicas"] * chosen["speed"]["max_rate"] >= 30 * 1.3
    assert f"RECOMMENDED: {chosen['name']} x {economics['replicas']} replica(s)" in resumed.stdout
    assert f"p99 {check['p99_ms']:.1f} ms" in resumed.stdout
    # The files deploy what was verified: the config is the one the verification served.
    config = yaml.safe_load((run / "deploy" / "embedserve.yaml").read_text())
    assert config["model"] == str(model) and config["backends"] == [chosen["backend"]]
    assert yaml.safe_load((run / "deploy" / "compose.override.yaml").read_text())["services"]["embedserve"]
    assert set(fingerprint.load(run / fingerprint.FILE)) == {"tiny-bert/torch", "tiny-bert/onnx"}
    assert rendered_problems(run / "report.html") == ([], 3)
    # Another machine's run combines with this one (here: the same run twice).
    compared = subprocess.run(
        [sys.executable, "-m", "cli", "advise", "compare", str(run), str(run)], cwd=ROOT, capture_output=True, text=True
    )
    assert compared.returncode == 0 and "4 setups meet the objective" in compared.stdout, compared.stderr


def test_bad_input_stops_before_anything_starts(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SystemExit, match=f"embedserve advise: {empty}: no texts in it"):
        main(["advise", "--corpus", str(empty), "--output", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit, match=f"--resume {tmp_path}: no advise run there"):
        main(["advise", "--resume", str(tmp_path), "--output", str(tmp_path / "runs")])
    assert not (tmp_path / "candidates").exists()
