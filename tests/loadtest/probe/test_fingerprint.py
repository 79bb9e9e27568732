"""Silent vector drift: two runs' fingerprints compared, a backend whose vectors were perturbed on purpose flagged,
and `embedserve report A B` failing on it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from loadtest.probe import fingerprint
from tests.helpers import ROOT


def vectors(seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(len(fingerprint.TEXTS), 32)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def perturbed(rows: np.ndarray, scale: float) -> np.ndarray:
    return rows + np.random.default_rng(99).normal(scale=scale, size=rows.shape).astype(np.float32)


def test_drift_flags_the_perturbed_backend_only(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir(), after.mkdir()
    onnx, torch, gone = vectors(1), vectors(2), vectors(3)
    fingerprint.save(before / fingerprint.FILE, {"onnx": onnx, "torch": torch, "model/openvino": gone})
    fingerprint.save(after / fingerprint.FILE, {"onnx": perturbed(onnx, 0.05)})
    fingerprint.save(after / fingerprint.FILE, {"torch": perturbed(torch, 1e-4)})  # added to the same file
    assert set(fingerprint.load(before / fingerprint.FILE)) == {"onnx", "torch", "model/openvino"}
    moved = fingerprint.drift(fingerprint.load(before / fingerprint.FILE), fingerprint.load(after / fingerprint.FILE))
    assert set(moved) == {"onnx", "torch"}
    assert moved["onnx"] < fingerprint.MIN_COSINE < moved["torch"]
    lines = fingerprint.drift_lines(after, before)
    assert len(lines) == 2 and lines[0].startswith("VECTOR DRIFT onnx: min cosine 0.9")
    assert lines[1] == f"vectors of torch unchanged (min cosine {moved['torch']:.6f})"

    report = subprocess.run(
        [sys.executable, "-m", "cli", "report", str(after), str(before)], capture_output=True, text=True, cwd=ROOT
    )
    assert report.returncode == 1 and "VECTOR DRIFT onnx" in report.stdout, report.stdout + report.stderr
    same = subprocess.run(
        [sys.executable, "-m", "cli", "report", str(before), str(before)], capture_output=True, text=True, cwd=ROOT
    )
    assert same.returncode == 0 and "VECTOR DRIFT" not in same.stdout


def test_a_changed_shape_is_flagged_and_a_missing_file_said(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    fingerprint.save(a / fingerprint.FILE, {"onnx": vectors(1)})
    assert fingerprint.drift_lines(a, b)[0].startswith("vector drift: not checked")
    fingerprint.save(b / fingerprint.FILE, {"onnx": vectors(1)[:, :16]})
    assert fingerprint.drift_lines(b, a) == ["VECTOR DRIFT onnx: its vectors changed shape between the runs"]
