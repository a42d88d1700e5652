"""`tinylm info`: exact parameter counts with tied weights counted once, and a breakdown that adds up."""

import json

import pytest

from cli_helpers import make_tiny_model
from hf_tinylm import PRESETS, TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.cli import main
from hf_tinylm.info import parameter_breakdown


def test_info_gpt2_prints_the_published_124m_count_and_the_gpt2_table(capsys):
    assert main(["info", "gpt2"]) == 0
    out = capsys.readouterr().out
    assert "124,439,808" in out
    # GPT-2 small's well-known table: wte, wpe, 12 blocks of 7,087,872, ln_f, and a head tied to wte.
    for row in ("38,597,376", "786,432", "7,087,872", "85,054,464", "1,536"):
        assert row in out
    assert "(tied to token embeddings)" in out


@pytest.mark.parametrize("preset", ["tiny", "llama-tiny", "small"])
def test_breakdown_adds_up_to_the_unique_parameters_of_the_real_model(preset):
    config = TinyLMConfig.from_preset(preset)
    counts = parameter_breakdown(config)
    model = TinyLMForCausalLM(config)
    assert counts["total"] == sum(p.numel() for p in set(model.parameters()))
    parts = ("token_embeddings", "position_embeddings", "blocks", "final_norm", "head", "other")
    assert sum(counts[name] for name in parts) == counts["total"]
    assert counts["blocks"] == config.num_hidden_layers * counts["per_block"]
    assert counts["head"] == (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)


def test_info_reads_a_model_folder_and_prints_json(tmp_path, capsys):
    folder = make_tiny_model(tmp_path / "m")
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = sum(p.numel() for p in TinyLMForCausalLM.from_pretrained(str(folder)).parameters())
    assert info["parameters"]["total"] == expected and info["layers"] == 2 and info["vocab_size"] == 257


def test_info_without_argument_lists_every_preset_with_its_size(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS)
    assert "1,557,611,200" in out  # gpt2-xl
