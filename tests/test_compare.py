"""`tinylm compare`: variants trained on the same data, tokenizer, budget and seed; the report's table and plot; the
variants' model folders; resume; parameter matching."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM

from cli_helpers import TINY_OVERRIDES, offline_env, weights
from hf_tinylm import TinyLMConfig
from hf_tinylm.cli import main
from hf_tinylm.training.compare import (PARAMETER_TOLERANCE, Variant, match_parameters, parameter_count,
                                        variants_to_compare)
from hf_tinylm.training.settings import CompareSettings, parse_config_overrides, parse_vary

VARIANTS = ("learned", "rotary", "alibi")
# matplotlib's first three line colours: one per variant on the chart
LINE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44))


def compare_argv(data, output, *extra):
    return ["compare", "--base", "tiny", "--config-overrides", TINY_OVERRIDES,
            "--vary", f"position_embedding_type={','.join(VARIANTS)}", "--params-matched",
            "--data", str(data), "--tokens", "2048", "--block-size", "32", "--batch-size", "8", "--evaluations", "2",
            "--validation-split", "0.01", "--decode-tokens", "8", "--no-progress", "-o", str(output), *extra]


@pytest.fixture(scope="module")
def shakespeare(shared_data):
    return shared_data / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def comparison(shakespeare, tmp_path_factory):
    """Three position schemes, 8 steps each, parameters matched."""
    output = tmp_path_factory.mktemp("compare") / "positions"
    assert main(compare_argv(shakespeare, output)) == 0
    return output


def results(folder):
    return {v["name"]: v for v in json.loads((folder / "comparison.json").read_text())["variants"]}


def test_comparison_writes_a_table_row_per_variant_with_every_measure(comparison):
    report = (comparison / "comparison.md").read_text()
    assert ("| variant | parameters | tokens seen | held-out loss | held-out perplexity | training tokens/s "
            "| peak memory | decode tokens/s |") in report
    numbers = results(comparison)
    assert list(numbers) == list(VARIANTS)
    for name, v in numbers.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {v['parameters']:,} | {v['tokens_seen']:,} | {v['held_out_loss']:.4f} |" in row
        assert v["train_tokens_per_second"] > 0 and v["decode_tokens_per_second"] > 0 and v["peak_memory_mb"] > 0
    assert {v["tokens_seen"] for v in numbers.values()} == {2048}  # the same budget: 8 steps x 8 blocks x 32
    assert "![Held-out loss against tokens seen](comparison.png)" in report


def test_comparison_plot_is_a_png_with_a_line_per_variant(comparison):
    with Image.open(comparison / "comparison.png") as image:
        assert image.format == "PNG" and image.size == (1100, 450)
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert all(colour in colours for colour in LINE_COLOURS[: len(VARIANTS)])
    assert (255, 255, 255) in colours and len(colours) > 50  # drawn on, not blank


def test_each_variant_folder_loads_like_any_trained_model_with_the_shared_tokenizer(comparison):
    tokenizers = set()
    for name in VARIANTS:
        folder = comparison / "variants" / name
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        assert model.config.position_embedding_type == name
        assert "](training_curves.png)" in (folder / "README.md").read_text()
        assert (folder / "training_curves.png").is_file()
        tokenizers.add((folder / "tokenizer.json").read_text())
    assert len(tokenizers) == 1
    assert not (comparison / "checkpoints").exists()


def test_params_matched_comparison_lands_within_the_tolerance_and_says_how(comparison):
    numbers = results(comparison)
    reference = numbers["learned"]["parameters"]
    assert all(abs(v["parameters"] - reference) <= PARAMETER_TOLERANCE * reference for v in numbers.values())
    report = (comparison / "comparison.md").read_text()
    assert "rotary: intermediate_size 64 -> " in report and "alibi: intermediate_size 64 -> " in report
    unmatched = variants_to_compare(CompareSettings(
        base="tiny", vary=parse_vary(["position_embedding_type=learned,rotary"]),
        config_overrides=parse_config_overrides(TINY_OVERRIDES), data=[], output="unused"))
    learned, rotary = (parameter_count(v.config.with_overrides(vocab_size=257)) for v in unmatched)
    assert learned - rotary > PARAMETER_TOLERANCE * learned  # unmatched, the position table alone is > 1%


def test_params_matched_matches_a_swiglu_llama_to_a_gpt2_style_model():
    """A GLU MLP has three matrices instead of two and an untied head: the width found still lands within 1%."""
    variants = [Variant("gpt2", TinyLMConfig.from_preset("small"), ""),
                Variant("llama", TinyLMConfig.from_preset("llama-small"), ""),
                Variant("rotary", TinyLMConfig.from_preset("small", position_embedding_type="rotary"), "")]
    target = parameter_count(variants[0].config)
    for (config, note), variant in zip(match_parameters(variants)[1:], variants[1:]):
        assert abs(parameter_count(config) - target) <= PARAMETER_TOLERANCE * target
        assert note.startswith(f"{variant.name}: intermediate_size {variant.config.intermediate_size} -> "
                               f"{config.intermediate_size}, ")
        assert abs(parameter_count(variant.config) - target) > PARAMETER_TOLERANCE * target  # it had to change


def test_resume_trains_only_the_variant_that_did_not_finish(comparison, shakespeare, tmp_path, capsys):
    """One variant folder missing (as after Ctrl-C during its training): --resume trains it alone, to the same
    weights, and leaves the finished ones untouched."""
    resumed = tmp_path / "positions"
    shutil.copytree(comparison, resumed)
    shutil.rmtree(resumed / "variants" / "rotary")
    (resumed / "comparison.md").unlink()
    finished = {name: (resumed / "variants" / name / "model.safetensors").stat().st_mtime_ns
                for name in ("learned", "alibi")}
    assert main(compare_argv(shakespeare, resumed, "--resume")) == 0
    out = capsys.readouterr().out
    assert "[1/3] learned: finished earlier, not trained again" in out
    assert "[3/3] alibi: finished earlier, not trained again" in out
    assert "[2/3] rotary: training" in out
    assert {name: (resumed / "variants" / name / "model.safetensors").stat().st_mtime_ns
            for name in finished} == finished
    original, again = weights(comparison / "variants" / "rotary"), weights(resumed / "variants" / "rotary")
    assert all(torch.equal(original[name], again[name]) for name in original)
    assert (resumed / "comparison.md").is_file()


def test_ctrl_c_during_a_variant_exits_130_and_leaves_only_the_finished_variants(shakespeare, tmp_path):
    output = tmp_path / "positions"
    # Its own process group, which gets the SIGINT as a terminal's Ctrl-C delivers it: to every process of the job.
    process = subprocess.Popen([sys.executable, "-m", "hf_tinylm", *compare_argv(shakespeare, output)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env(),
                               start_new_session=True)
    for line in process.stdout:
        if line.startswith("[2/3] rotary  step"):  # the second variant is training
            break
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "tinylm: interrupted"
    assert sorted(p.name for p in (output / "variants").iterdir()) == ["learned"]  # no partial folder of rotary
    assert (output / "variants" / "learned" / "all_results.json").is_file()
    assert not (output / "comparison.md").exists() and not (output / "comparison.png").exists()


def test_an_existing_comparison_is_continued_only_with_resume_and_the_same_settings(comparison, shakespeare,
                                                                                       tmp_path, capsys):
    copy = tmp_path / "positions"
    shutil.copytree(comparison, copy)
    assert main(compare_argv(shakespeare, copy)) == 1
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main(compare_argv(shakespeare, copy, "--resume", "--seed", "7")) == 1
    assert "other settings (seed differ)" in capsys.readouterr().err


def test_a_bad_variant_is_refused_before_anything_is_written(shakespeare, tmp_path, capsys):
    output = tmp_path / "bad"
    code = main(["compare", "--base", "tiny", "--vary", "norm_type=layernorm,batchnorm", "--data", str(shakespeare),
                 "-o", str(output)])
    assert code == 1
    assert "norm_type" in capsys.readouterr().err
    assert not output.exists()


def test_vary_crosses_fields_or_changes_one_at_a_time():
    vary = parse_vary(["position_embedding_type=learned,rotary", "norm_type=layernorm,rmsnorm"])
    crossed = variants_to_compare(CompareSettings(base="tiny", vary=vary, data=[], output="unused"))
    assert [v.name for v in crossed] == ["learned-layernorm", "learned-rmsnorm", "rotary-layernorm", "rotary-rmsnorm"]
    assert crossed[3].config.position_embedding_type == "rotary" and crossed[3].config.norm_type == "rmsnorm"
    alone = variants_to_compare(CompareSettings(base="tiny", vary=vary, one_at_a_time=True, data=[], output="unused"))
    assert [v.name for v in alone] == ["base", "rotary", "rmsnorm"]  # learned and layernorm are the base's
    assert alone[2].config.position_embedding_type == "learned"
