"""The benchmark runs and writes well-formed results; how fast anything is, it does not judge (that needs a quiet
machine and the full run)."""

import importlib.util
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
        probes = report["memory"][0][side]["probes"]
        assert len(probes) == report["settings"]["memory_probes"] and report["memory"][0][side]["peak_mb"] > 0

    table = (tmp_path / "cpu.md").read_text()
    assert "quick mode" in table
    for row in report["speed"]:
        assert f"| {row['pair']} | {row['dtype']} | {row['task']} | {'x'.join(map(str, row['shape']))} |" in table
    assert report["speed"][-1]["pair"] == "tiny" and report["speed"][-1]["corpus"] == "generated words"


def test_an_interrupted_benchmark_keeps_the_parts_it_finished_marked_partial(tmp_path, monkeypatch):
    # The full run takes about an hour: the results are written after each pair and dtype, so stopping it (here: in its
    # second pair) leaves the first pair's rows, marked partial in both files.
    spec = importlib.util.spec_from_file_location("benchmark_run", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    timed_pairs = []
    measure = benchmark.time_pair

    def time_pair(pair, *args):
        timed_pairs.append(pair)
        if pair == "llama":
            raise KeyboardInterrupt
        return measure(pair, *args)

    monkeypatch.setattr(benchmark, "time_pair", time_pair)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(["--quick", "--pairs", "tiny", "llama", "--dtypes", "fp32", "--tasks", "train", "prefill",
                        "--out", str(tmp_path)])

    assert timed_pairs == ["tiny", "llama"]
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert not report["complete"]
    assert [(row["pair"], row["task"]) for row in report["speed"]] == [("tiny", "train"), ("tiny", "prefill")]
    assert [row["pair"] for row in report["memory"]] == ["tiny"]
    assert "partial: the run was interrupted" in (tmp_path / "cpu.md").read_text()


def test_operator_profile_shows_both_models_side_by_side_per_call(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARK.with_name("profile_ops.py")), "--quick", "--pair", "tiny", "--task", "decode",
         "--calls", "1", "--rows", "30"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tiny fp32 decode 1x8x8:") and "reference = GPT2LMHeadModel" in lines[0]
    rows = {name: [float(x) for x in numbers] for name, *numbers in (line.rsplit(maxsplit=4) for line in lines[2:-1])}
    # Both models ran their matrix products: time and calls on each side (the quick decode: 8 new tokens).
    tinylm_ms, tinylm_calls, reference_ms, reference_calls = rows["aten::addmm"]
    assert tinylm_ms > 0 and reference_ms > 0 and tinylm_calls >= 8 and reference_calls >= 8
    assert lines[-1].startswith("all operators") and all(float(x) > 0 for x in lines[-1].split()[2:])
