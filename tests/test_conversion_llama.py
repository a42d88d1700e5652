"""Transformers Llama -> TinyLM -> Llama: parity of logits and generations, bit-exact round trips, refusals.

Source checkpoints are tiny random `LlamaForCausalLM`s with wide weights (`conversion_testing.randomise_wide`), so
that any mapping mistake or ignored option moves the logits by far more than the 1e-5 tolerance.
"""

import json
from pathlib import Path

import pytest
import torch
from conversion_testing import assert_no_output, assert_same_weights, max_logits_diff, randomise_wide
from conversion_testing import tokens as random_tokens
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from tinylm_testing import assert_same_generation, generate_with_logits
from transformers import LlamaConfig, LlamaForCausalLM

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.cli import main
from hf_tinylm.conversion.base import ConversionError
from hf_tinylm.conversion.convert import convert
from hf_tinylm.conversion.formats.llama import llama_config_from_tinylm, tinylm_config_from_llama

ATOL = 1e-5  # fp32 logits, converted vs LlamaForCausalLM
TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)  # fmt: skip
VARIANTS = {
    "default": {},
    "multi_head_and_eps": dict(num_key_value_heads=4, rms_norm_eps=1e-2),
    "head_dim_not_hidden_over_heads": dict(head_dim=16),
    "biases": dict(attention_bias=True, mlp_bias=True),
    "tied_gelu": dict(tie_word_embeddings=True, hidden_act="gelu"),
    "rope_linear": dict(rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}),
    "rope_llama3": dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 16}),
    "rope_yarn": dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                       "original_max_position_embeddings": 16}),
}  # fmt: skip


def random_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return randomise_wide(LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides})), seed)


def save_llama(folder: Path, **overrides) -> LlamaForCausalLM:
    model = random_llama(**overrides)
    model.save_pretrained(folder)
    return model


def tokens(shape=(3, 20)) -> torch.Tensor:
    return random_tokens(TINY["vocab_size"], shape)


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_matches_llama_logits_and_generations(variant, tmp_path):
    source = save_llama(tmp_path / "llama", **VARIANTS[variant])
    result = convert(tmp_path / "llama", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")

    assert result.source_format == "llama" and result.max_abs_logits_diff <= ATOL
    assert max_logits_diff(source, model, tokens()) <= ATOL
    prompt = tokens()[:2, :6]
    for settings in (dict(do_sample=False), dict(do_sample=True, top_k=0)):
        settings.update(max_new_tokens=8, pad_token_id=0)
        expected = generate_with_logits(source, prompt, **settings)
        assert_same_generation(generate_with_logits(model, prompt, **settings), expected, atol=ATOL)


@pytest.mark.parametrize("option", [dict(rms_norm_eps=1e-2), dict(hidden_act="gelu"), dict(head_dim=16),
                                    VARIANTS["rope_llama3"], VARIANTS["rope_yarn"]])  # fmt: skip
def test_each_math_option_moves_the_logits_far_beyond_the_tolerance(option):
    """The parity tests above could not pass if the converter ignored any of these options."""
    assert max_logits_diff(random_llama(), random_llama(**option), tokens()) > 100 * ATOL


@pytest.mark.parametrize("variant", ["default", "biases", "tied_gelu", "head_dim_not_hidden_over_heads"])
def test_llama_to_tinylm_to_llama_is_bit_exact(variant, tmp_path):
    source = save_llama(tmp_path / "llama", **VARIANTS[variant])
    convert(tmp_path / "llama", tmp_path / "tinylm", progress=False)
    result = convert(tmp_path / "tinylm", tmp_path / "back", to="llama", progress=False)

    assert_same_weights(tmp_path / "llama", tmp_path / "back")
    exported = LlamaForCausalLM.from_pretrained(tmp_path / "back")
    assert exported.config.to_diff_dict() == source.config.to_diff_dict()
    with torch.no_grad():
        assert torch.equal(exported(tokens()).logits, source(tokens()).logits)
    assert result.target == "llama" and result.max_abs_logits_diff <= ATOL
    card = ModelCard.load(tmp_path / "back" / "README.md")
    assert "llama" in card.data.tags and "`LlamaForCausalLM`" in card.text
    assert f"Max |Δlogits| = {result.max_abs_logits_diff:.3g}" in card.text


def test_half_precision_round_trip_is_bit_exact_by_default(tmp_path):
    random_llama().to(torch.bfloat16).save_pretrained(tmp_path / "llama")
    convert(tmp_path / "llama", tmp_path / "tinylm", progress=False)
    convert(tmp_path / "tinylm", tmp_path / "back", to="llama", progress=False)
    assert_same_weights(tmp_path / "llama", tmp_path / "back", torch.bfloat16)


@pytest.mark.parametrize("overrides", [{}, dict(tie_word_embeddings=True, num_key_value_heads=1)])
def test_llama_style_tinylm_exports_to_llama_with_parity(overrides, tmp_path):
    config = TinyLMConfig.from_preset("llama-tiny", vocab_size=96, hidden_size=64, num_hidden_layers=2, **overrides)
    torch.manual_seed(0)
    tinylm = TinyLMForCausalLM(config).eval()
    tinylm.save_pretrained(tmp_path / "tinylm")
    result = convert(tmp_path / "tinylm", tmp_path / "llama", to="llama", progress=False)
    exported = LlamaForCausalLM.from_pretrained(tmp_path / "llama")
    assert max_logits_diff(tinylm, exported, tokens()) <= ATOL and result.max_abs_logits_diff <= ATOL


def test_tinylm_that_llama_cannot_represent_is_refused_naming_every_difference(tmp_path):
    config = TinyLMConfig.from_preset("tiny", sliding_window=8, embedding_dropout=0.1)
    with pytest.raises(ConversionError) as error:
        llama_config_from_tinylm(config)
    for field in ("position_embedding_type='learned'", "norm_type='layernorm'", "mlp_type='mlp'",
                  "sliding_window=8", "embedding_dropout=0.1"):  # fmt: skip
        assert field in str(error.value)
    TinyLMForCausalLM(config).save_pretrained(tmp_path / "gpt2-style")
    with pytest.raises(ConversionError, match="cannot be expressed as Llama.*position_embedding_type='learned'"):
        convert(tmp_path / "gpt2-style", tmp_path / "llama", to="llama", progress=False)
    assert_no_output(tmp_path / "llama")


def test_llama_config_survives_the_round_trip_through_tinylm():
    llama = LlamaConfig(**TINY, head_dim=16, attention_bias=True, mlp_bias=True, hidden_act="gelu",
                        rms_norm_eps=1e-3, tie_word_embeddings=True, rope_parameters=VARIANTS["rope_llama3"][
                            "rope_parameters"])  # fmt: skip
    back = llama_config_from_tinylm(tinylm_config_from_llama(llama))
    assert back.to_diff_dict() == {**llama.to_diff_dict(), "architectures": ["LlamaForCausalLM"]}


def test_rope_parameters_tinylm_refuses_are_refused_naming_the_field():
    llama = LlamaConfig(**TINY)
    llama.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0}  # no `factor`
    with pytest.raises(ConversionError, match="factor"):
        tinylm_config_from_llama(llama)


def break_checkpoint(folder: Path, how: str) -> str:
    """Damage a saved tiny Llama in `folder`; returns the text the error must contain."""
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    if how == "missing_tensor":
        del tensors["model.layers.1.self_attn.k_proj.weight"]
        expected = "missing 1 Llama tensor(s): model.layers.1.self_attn.k_proj.weight"
    elif how == "misshaped_tensor":
        tensors["model.norm.weight"] = tensors["model.norm.weight"][:10]
        expected = "'model.norm.weight' has shape [10]"
    elif how == "foreign_tensor":
        tensors["score.weight"] = torch.zeros(2, 32)
        expected = "does not: score.weight"
    else:
        config = json.loads((folder / "config.json").read_text())
        del config["hidden_size"]
        (folder / "config.json").write_text(json.dumps(config))
        return "lacks the size field(s) hidden_size"
    save_file(tensors, weights, metadata={"format": "pt"})
    return expected


@pytest.mark.parametrize("how", ["missing_tensor", "misshaped_tensor", "foreign_tensor", "missing_size_field"])
def test_bad_llama_source_fails_in_one_line_with_exit_1_and_no_output(how, tmp_path, capsys):
    save_llama(tmp_path / "llama")
    expected = break_checkpoint(tmp_path / "llama", how)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "llama"), str(tmp_path / "tinylm"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: ") and expected in err and err.count("\n") == 1, err
    assert_no_output(tmp_path / "tinylm")


def test_llama_to_llama_is_refused_pointing_at_the_default_target(tmp_path):
    save_llama(tmp_path / "llama")
    with pytest.raises(ConversionError, match="already a Llama checkpoint.*leave --to at its default"):
        convert(tmp_path / "llama", tmp_path / "out", to="llama", progress=False)
    assert_no_output(tmp_path / "out")
