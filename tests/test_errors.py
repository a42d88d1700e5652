"""Bad input fails early with a ValueError that names the problem and the fix."""

import pytest
import torch

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from tinylm_testing import build, tiny_config


@pytest.mark.parametrize("bad_id", [-1, 64, 10_000])
def test_token_ids_outside_the_vocabulary_are_refused(bad_id):
    model = build(tiny_config())
    ids = torch.tensor([[1, 2, bad_id, 3]])
    with pytest.raises(ValueError, match=rf"Token id {bad_id} is outside this model's vocabulary \[0, 64\)"):
        model(ids)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_input_longer_than_absolute_position_table_is_refused(positions):
    model = build(tiny_config(position_embedding_type=positions, max_position_embeddings=16))
    model(torch.randint(1, 64, (1, 16)))  # exactly the table: fine
    with pytest.raises(ValueError, match="needs 17 positions .* max_position_embeddings=16"):
        model(torch.randint(1, 64, (1, 17)))
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model.generate(torch.randint(1, 64, (1, 10)), max_new_tokens=10, do_sample=False)


@pytest.mark.parametrize("positions", ["rotary", "alibi"])
def test_relative_positions_run_past_max_position_embeddings(positions):
    model = build(tiny_config(position_embedding_type=positions, max_position_embeddings=16))
    assert model(torch.randint(1, 64, (1, 40))).logits.shape == (1, 40, 64)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(hidden_size=30), r"`hidden_size` \(30\) must be divisible by `num_attention_heads` \(4\)"),
        (dict(num_key_value_heads=3), r"`num_attention_heads` \(4\) must be divisible by `num_key_value_heads`"),
        (dict(position_embedding_type="relative"), r"`position_embedding_type` must be one of 'learned', "),
        (dict(norm_type="batchnorm"), r"`norm_type` must be one of 'layernorm', 'rmsnorm'"),
        (dict(norm_position="middle"), r"`norm_position` must be one of 'pre', 'post'"),
        (dict(mlp_type="moe"), r"`mlp_type` must be one of 'mlp', 'glu'"),
        (dict(hidden_act="swishy"), r"`hidden_act` must be one of .*'silu'"),
        (dict(sliding_window=0), r"`sliding_window` must be a positive integer or None"),
        (dict(attention_dropout=1.0), r"`attention_dropout` must lie in \[0, 1\)"),
        (dict(num_hidden_layers=0), r"`num_hidden_layers` must be a positive integer"),
        (dict(position_embedding_type="rotary", hidden_size=36, num_attention_heads=4),
         r"Rotary positions need an even `head_dim`, got 9"),
    ],
)
def test_inconsistent_config_is_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown preset 'gpt3'. Valid presets: tiny, small, .*gpt2-xl.*llama-tiny"):
        TinyLMConfig.from_preset("gpt3")


def test_config_edited_into_inconsistency_is_refused_when_the_model_is_built():
    config = tiny_config()
    config.num_key_value_heads = 3
    with pytest.raises(ValueError, match="divisible by `num_key_value_heads`"):
        TinyLMForCausalLM(config)


def test_flash_attention_is_refused_for_alibi():
    model = build(tiny_config(position_embedding_type="alibi"))
    model.config._attn_implementation = "flash_attention_2"  # not installable here; the check comes first
    with pytest.raises(ValueError, match="cannot add ALiBi's attention bias. Use 'sdpa'"):
        model(torch.randint(1, 64, (1, 5)))


def test_exactly_one_of_input_ids_and_inputs_embeds_is_required():
    model = build(tiny_config())
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        model()
    ids = torch.randint(1, 64, (1, 5))
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        model(input_ids=ids, inputs_embeds=model.get_input_embeddings()(ids))
