"""GPT-2 <-> TinyLM mapping as pure functions: which configs are honoured or refused, which tensors are required."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_tinylm import TinyLMConfig
from hf_tinylm.conversion.base import ConversionError
from hf_tinylm.conversion.formats.gpt2 import (
    check_gpt2_state_dict,
    gpt2_config_from_tinylm,
    gpt2_expected_shapes,
    gpt2_to_tinylm_tensors,
    normalize_gpt2_state_dict,
    tinylm_config_from_gpt2,
    tinylm_to_gpt2_tensors,
)
from hf_tinylm.conversion.formats.openai_tf import openai_tf_name_to_gpt2, openai_tf_tensor_to_gpt2

SMALL = dict(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)


def small_state_dict(**overrides) -> tuple[GPT2Config, dict[str, torch.Tensor]]:
    config = GPT2Config(**{**SMALL, **overrides})
    torch.manual_seed(0)
    return config, normalize_gpt2_state_dict(GPT2LMHeadModel(config).state_dict())


def test_every_math_option_of_gpt2_config_lands_in_the_tinylm_config():
    gpt2 = GPT2Config(
        **SMALL, n_inner=40, activation_function="relu", layer_norm_epsilon=1e-3, scale_attn_weights=False,
        scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False, embd_pdrop=0.2, attn_pdrop=0.3,
        resid_pdrop=0.4,
    )  # fmt: skip
    config = tinylm_config_from_gpt2(gpt2)

    assert (config.vocab_size, config.max_position_embeddings, config.hidden_size) == (64, 16, 16)
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (2, 4, 40)
    assert (config.hidden_act, config.norm_eps) == ("relu", 1e-3)
    assert config.attention_scale == 1.0 and config.scale_attn_by_inverse_layer_idx
    assert config.tie_word_embeddings is False
    assert (config.embedding_dropout, config.attention_dropout, config.residual_dropout) == (0.2, 0.3, 0.4)
    assert (config.bos_token_id, config.eos_token_id) == (0, 0)


def test_default_gpt2_config_maps_to_the_gpt2_preset():
    assert tinylm_config_from_gpt2(GPT2Config()).to_dict() == TinyLMConfig.from_preset("gpt2").to_dict()


@pytest.mark.parametrize(
    ("option", "value"), [("add_cross_attention", True), ("activation_function", "not_an_activation")]
)
def test_unsupported_gpt2_option_is_refused_naming_it(option, value):
    with pytest.raises(ConversionError, match=option):
        tinylm_config_from_gpt2(GPT2Config(**SMALL, **{option: value}))


def test_gpt2_config_survives_the_round_trip_through_tinylm():
    gpt2 = GPT2Config(**SMALL, n_inner=40, activation_function="gelu", layer_norm_epsilon=1e-3,
                      scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False)
    back = gpt2_config_from_tinylm(tinylm_config_from_gpt2(gpt2))
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                  "layer_norm_epsilon", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
                  "tie_word_embeddings", "embd_pdrop", "attn_pdrop", "resid_pdrop", "bos_token_id", "eos_token_id"):
        assert getattr(back, field) == getattr(gpt2, field), field


def test_tinylm_config_gpt2_cannot_represent_is_refused_naming_every_difference():
    config = TinyLMConfig.from_preset("llama-tiny", sliding_window=8)
    with pytest.raises(ConversionError) as error:
        gpt2_config_from_tinylm(config)
    for field in ("position_embedding_type='rotary'", "norm_type='rmsnorm'", "mlp_type='glu'",
                  "attention_bias=False", "mlp_bias=False", "num_key_value_heads=2", "sliding_window=8"):
        assert field in str(error.value)


def test_custom_attention_scale_is_refused_for_gpt2():
    with pytest.raises(ConversionError, match="attention_scale=0.5"):
        gpt2_config_from_tinylm(TinyLMConfig(attention_scale=0.5))


def test_normalize_strips_the_transformer_prefix_and_drops_legacy_mask_buffers():
    tensor = torch.zeros(1)
    normalized = normalize_gpt2_state_dict(
        {"transformer.wte.weight": tensor, "h.0.ln_1.weight": tensor, "transformer.h.0.attn.bias": tensor,
         "h.0.attn.masked_bias": tensor, "lm_head.weight": tensor}
    )  # fmt: skip
    assert set(normalized) == {"wte.weight", "h.0.ln_1.weight", "lm_head.weight"}


def test_same_tensor_with_and_without_prefix_is_refused():
    with pytest.raises(ConversionError, match="'wte.weight' twice"):
        normalize_gpt2_state_dict({"transformer.wte.weight": torch.zeros(1), "wte.weight": torch.zeros(1)})


def test_missing_tensor_is_named():
    config, state_dict = small_state_dict()
    del state_dict["h.1.mlp.c_fc.weight"]
    with pytest.raises(ConversionError, match=r"missing 1 GPT-2 tensor\(s\): h\.1\.mlp\.c_fc\.weight"):
        check_gpt2_state_dict(state_dict, config)


def test_misshaped_tensor_is_named_with_both_shapes():
    config, state_dict = small_state_dict()
    state_dict["h.0.attn.c_attn.weight"] = state_dict["h.0.attn.c_attn.weight"].t()
    with pytest.raises(ConversionError, match=r"'h\.0\.attn\.c_attn\.weight' has shape \[48, 16\].*\[16, 48\]"):
        check_gpt2_state_dict(state_dict, config)


def test_untied_config_without_lm_head_is_refused():
    config, state_dict = small_state_dict(tie_word_embeddings=False)
    del state_dict["lm_head.weight"]
    with pytest.raises(ConversionError, match="lm_head.weight.*tie_word_embeddings=False"):
        check_gpt2_state_dict(state_dict, config)


def test_tied_config_with_a_different_lm_head_is_refused():
    config, state_dict = small_state_dict()
    state_dict["lm_head.weight"] = state_dict["wte.weight"] + 1
    with pytest.raises(ConversionError, match="lm_head.weight` differs from `wte.weight"):
        check_gpt2_state_dict(state_dict, config)


def test_tensor_foreign_to_gpt2_is_refused_naming_it():
    config, state_dict = small_state_dict()
    state_dict["score.weight"] = torch.zeros(2, 16)
    with pytest.raises(ConversionError, match="score.weight"):
        check_gpt2_state_dict(state_dict, config)


def test_conv1d_weights_are_transposed_and_everything_else_copied():
    config, state_dict = small_state_dict()
    mapped = dict(gpt2_to_tinylm_tensors(state_dict, config))

    c_attn = state_dict["h.1.attn.c_attn.weight"]  # [in, 3 * hidden]: q | k | v along the columns
    hidden = c_attn.shape[0]
    for i, x in enumerate("qkv"):
        part = c_attn[:, i * hidden : (i + 1) * hidden].t()
        assert torch.equal(mapped[f"model.layers.1.self_attn.{x}_proj.weight"], part)
        assert torch.equal(mapped[f"model.layers.1.self_attn.{x}_proj.bias"],
                           state_dict["h.1.attn.c_attn.bias"][i * hidden : (i + 1) * hidden])
    assert torch.equal(mapped["model.layers.0.mlp.down_proj.weight"], state_dict["h.0.mlp.c_proj.weight"].t())
    assert mapped["model.layers.0.attn_norm.bias"] is state_dict["h.0.ln_1.bias"]
    assert mapped["model.embed_positions.weight"] is state_dict["wpe.weight"]
    assert "lm_head.weight" not in mapped  # tied: the head is the embedding


def test_untied_head_is_carried_over_as_its_own_tensor():
    config, state_dict = small_state_dict(tie_word_embeddings=False)
    mapped = dict(gpt2_to_tinylm_tensors(state_dict, config))
    assert torch.equal(mapped["lm_head.weight"], state_dict["lm_head.weight"])


def test_tensor_mapping_round_trip_is_bit_exact():
    config, state_dict = small_state_dict(tie_word_embeddings=False)
    tinylm = dict(gpt2_to_tinylm_tensors(state_dict, config))
    exported = tinylm_to_gpt2_tensors(tinylm, tinylm_config_from_gpt2(config))
    back = {name.removeprefix("transformer."): tensor for name, tensor in exported}
    assert back.keys() == state_dict.keys()
    assert all(torch.equal(back[name], state_dict[name]) for name in state_dict)


def test_openai_variable_names_map_to_transformers_names():
    assert openai_tf_name_to_gpt2("model/wte") == "wte.weight"
    assert openai_tf_name_to_gpt2("model/h11/attn/c_attn/w") == "h.11.attn.c_attn.weight"
    assert openai_tf_name_to_gpt2("model/h0/ln_1/g") == "h.0.ln_1.weight"
    assert openai_tf_name_to_gpt2("model/ln_f/b") == "ln_f.bias"
    assert openai_tf_name_to_gpt2("beta1_power") is None


def test_openai_conv_kernel_loses_its_leading_unit_axis_and_other_shapes_are_refused():
    kernel = torch.arange(6.0).reshape(1, 2, 3)
    assert torch.equal(openai_tf_tensor_to_gpt2("h.0.mlp.c_fc.weight", kernel), kernel[0])
    with pytest.raises(ConversionError, match=r"'h\.0\.mlp\.c_fc\.weight' has shape \[2, 3\]"):
        openai_tf_tensor_to_gpt2("h.0.mlp.c_fc.weight", kernel[0])


def test_expected_shapes_count_124m_parameters_for_gpt2_small():
    shapes = gpt2_expected_shapes(GPT2Config())
    total = sum(torch.Size(shape).numel() for name, shape in shapes.items() if name != "lm_head.weight")
    assert total == 124_439_808  # OpenAI's 124M index (tests/test_tf_checkpoint.py) and the tied HF model
