"""The benchmark runs and writes well-formed results; how fast anything is, it does not judge (that needs a quiet
machine and the full run)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "run.py"


@pytest.mark.slow
def test_quick_benchmark_writes_every_measurement_as_json_and_a_markdown_table(tmp_path):
    # One pair (the Llama weight mapping), bf16 (autocast training, bf16 inference), every task but compiled
    # training, whose inductor build of a forward and backward takes minutes on a shared CPU.
    tasks = ["train", "train-ckpt", "prefill", "decode", "decode-static", "load", "train-command"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--pairs", "llama", "--dtypes", "bf16", "--tasks", *tasks,
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=540, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "cpu.json").read_text())

    assert report["quick"] and report["complete"] and report["machine"]["device"] == "cpu"
    for roof in report["roofline"].values():
        assert roof["matmul_gflops"] > 0 and roof["stream_gbs"] > 0
    assert [row["task"] for row in report["speed"]] == [
        "train", "train-ckpt", "prefill", "decode", "decode", "decode-static", "decode-static", "load", "train-command"]
    for row in report["speed"]:
        for side in ("tinylm", "reference"):
            assert row[side]["n"] == 2 and 0 < row[side]["min"] <= row[side]["median"] <= row[side]["max"]
        assert math.isfinite(row["ratio"]["median"]) and row["ratio"]["median"] > 0
        assert row["met"] == (row["ratio"]["median"] >= row["goal"])
        if row["task"] not in ("load", "train-command"):
            assert 0 < row["roofline_fraction"]["tinylm"] and 0 < row["roofline_fraction"]["reference"]
    assert {row["task"] for row in report["memory"]} == {"train"}  # quick: one peak-memory probe
    for side in ("tinylm", "reference"):
        assert report["memory"][0][side]["peak_mb"] > 0

    table = (tmp_path / "cpu.md").read_text()
    assert "quick mode" in table
    for row in report["speed"]:
        assert f"| {row['pair']} | {row['dtype']} | {row['task']} | {'x'.join(map(str, row['shape']))} |" in table
    assert report["speed"][-1]["pair"] == "tiny" and report["speed"][-1]["corpus"] == "generated words"
