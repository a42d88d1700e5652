"""`tinylm demo`, shortened: it trains, saves, reloads the folder in a fresh process through
`trust_remote_code=True` and generates; held-out perplexity falls."""

import json

import pytest

from cli_helpers import run_cli


@pytest.mark.slow
def test_short_demo_trains_reloads_with_remote_code_and_generates(tmp_path):
    output = tmp_path / "demo"
    result = run_cli("demo", "--steps", "40", "--max-bytes", "200000", "--max-new-tokens", "20", "--no-progress",
                     "-o", str(output), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output / "all_results.json").read_text())
    assert results["steps"] == 40
    assert results["perplexity_after"] < results["perplexity_before"] / 2
    # The sample came from the folder's own code, in a process that never imported hf_tinylm.
    assert "loaded transformers_modules." in result.stdout and ".modeling_tinylm.TinyLMForCausalLM" in result.stdout
    sample = result.stdout.split("-" * 60)[1].strip()
    assert sample.startswith("def") and len(sample) > len("def")
    assert f"-> {results['perplexity_after']:.1f} after 40 steps" in result.stdout
    assert (output / "training_curves.png").is_file() and "](training_curves.png)" in (output / "README.md").read_text()
    assert f"loss curves: {output / 'training_curves.png'}" in result.stdout


def test_demo_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    result = run_cli("demo", "-o", str(tmp_path / "notes"))
    assert result.returncode == 1
    assert "is not a TinyLM model folder; pass --overwrite" in result.stderr
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
