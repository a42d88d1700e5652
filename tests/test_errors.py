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
        (dict(attention_dropout=1.0), r"`attention_dropout` must be a number in \[0, 1\)"),
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
    config = tiny_config()
    config.position_embedding_type = "xpos"  # an unknown scheme is refused, not built as some other one
    with pytest.raises(ValueError, match="`position_embedding_type` must be one of"):
        TinyLMForCausalLM(config)


def test_flash_attention_is_refused_for_alibi():
    model = build(tiny_config(position_embedding_type="alibi"))
    model.config._attn_implementation = "flash_attention_2"  # not installable here; the check comes first
    with pytest.raises(ValueError, match="cannot add ALiBi's attention bias"):
        model(torch.randint(1, 64, (1, 5)))


def test_exactly_one_of_input_ids_and_inputs_embeds_is_required():
    model = build(tiny_config())
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        model()
    ids = torch.randint(1, 64, (1, 5))
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        model(input_ids=ids, inputs_embeds=model.get_input_embeddings()(ids))


# ----------------------------------------------------------------------------------------------- the model's entry

IDS = torch.randint(1, 64, (2, 5))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (dict(input_ids=torch.rand(2, 5)), r"`input_ids` must be a \(batch, sequence\) tensor of integer token ids, "
                                           r"got a torch.float32 tensor of shape \(2, 5\)"),
        (dict(input_ids=torch.tensor([1, 2, 3])), r"shape \(3,\). A single sequence needs a batch dimension"),
        (dict(input_ids=torch.ones(2, 5, dtype=torch.bool)), r"got a torch.bool tensor"),
        (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), r"The input is empty \(batch, sequence\) = \(1, 0\)"),
        (dict(inputs_embeds=torch.rand(2, 5, 31)), r"`inputs_embeds` must have shape \(batch, sequence, "
                                                   r"hidden_size=32\), got \(2, 5, 31\)"),
        (dict(inputs_embeds=torch.ones(2, 5, 32, dtype=torch.long)), r"`inputs_embeds` must be floating point"),
        (dict(input_ids=IDS, attention_mask=torch.ones(3, 5)), r"`attention_mask` has shape \(3, 5\), but the input "
                                                               r"is \(batch, sequence\) = \(2, 5\), so it must be"),
        (dict(input_ids=IDS, attention_mask=torch.ones(2, 6)), r"so it must be \(2, 5\): one entry per cached"),
        (dict(input_ids=IDS, attention_mask=torch.ones(5)), r"`attention_mask` must be \(batch, sequence\) or a 4-D"),
        (dict(input_ids=IDS, position_ids=torch.arange(4)[None]), r"`position_ids` must have shape \(2, 5\) or "
                                                                  r"\(1, 5\) .* got \(1, 4\)"),
        (dict(input_ids=IDS, labels=IDS[:, :4]), r"`labels` must have the \(batch, sequence\) shape of the input, "
                                                 r"\(2, 5\), got \(2, 4\)"),
    ],
    ids=["float-ids", "1-d-ids", "bool-ids", "empty", "embeds-width", "integer-embeds", "mask-batch", "mask-length",
         "1-d-mask", "position-ids", "labels"],
)
def test_malformed_inputs_are_refused_at_the_models_entry(inputs, message):
    with pytest.raises(ValueError, match=message):
        build(tiny_config())(**inputs)


def test_attention_mask_must_cover_the_cached_tokens_too():
    model = build(tiny_config())
    cache = model(IDS, use_cache=True).cache
    with pytest.raises(ValueError, match=r"after 5 cached tokens, so it must be \(2, 6\)"):
        model(IDS[:, :1], cache=cache, attention_mask=torch.ones(2, 1))
    assert model(IDS[:, :1], cache=cache, attention_mask=torch.ones(2, 6)).logits.shape == (2, 1, 64)


def test_generating_from_an_empty_prompt_is_refused_with_the_way_to_start_from_bos():
    with pytest.raises(ValueError, match=r"The input is empty .* start from the BOS token"):
        build(tiny_config()).generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)


# ----------------------------------------------------------------------------------------------- configs


def test_preset_refuses_an_override_that_is_not_a_config_field():
    with pytest.raises(ValueError, match=r"`n_layer` is not a TinyLMConfig field, so it cannot override preset 'gpt2'"):
        TinyLMConfig.from_preset("gpt2", n_layer=6)
    with pytest.raises(ValueError, match=r"Did you mean `num_hidden_layers`\?"):
        TinyLMConfig.from_preset("tiny", num_hiden_layers=6)


def test_only_rotary_configs_carry_rope_parameters():
    """Transformers treats a config with `rope_parameters` as RoPE (e.g. for RoPE scaling): say the truth."""
    assert tiny_config().rope_parameters is None
    assert tiny_config(position_embedding_type="rotary").rope_parameters == {"rope_type": "default",
                                                                              "rope_theta": 10000.0}
    assert TinyLMConfig.from_preset("llama-tiny", position_embedding_type="alibi").rope_parameters is None
    assert TinyLMConfig.from_preset("llama-tiny").rope_parameters["rope_type"] == "default"


@pytest.mark.parametrize(
    ("rope_parameters", "message"),
    [
        ({"rope_type": "nope"}, r"`rope_parameters\['rope_type'\]` must be one of 'default', 'linear', .*got 'nope'"),
        ({"rope_type": "linear"}, r"`rope_parameters`: Missing required keys .*'linear'.*'factor'"),
        ({"rope_type": "dynamic", "factor": 0.5}, r"`rope_parameters\['factor'\]` must be a number >= 1, got 0.5"),
        ({"rope_type": "default", "rope_theta": 0}, r"`rope_parameters\['rope_theta'\]` must be a positive number"),
        ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
          "original_max_position_embeddings": 16}, r"`rope_parameters\['high_freq_factor'\]` must be greater than"),
        ({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
          "original_max_position_embeddings": 16}, r"`rope_parameters\['short_factor'\]` must be a list of head_dim "
                                                   r"/ 2 = 4 numbers"),
        ({"rope_type": "default", "partial_rotary_factor": 0.5}, r"must be 1 \(TinyLM rotates whole heads\)"),
        ("default", r"`rope_parameters` must be a dict with a `rope_type`, got 'default'"),
    ],
    ids=["unknown-type", "missing-factor", "small-factor", "zero-theta", "llama3-frequencies", "longrope-lengths",
         "partial-rotary", "not-a-dict"],
)
def test_bad_rope_parameters_are_refused_at_construction(rope_parameters, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(position_embedding_type="rotary", rope_parameters=rope_parameters)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(hidden_size="32"), r"`hidden_size` must be a positive integer, got '32'"),
        (dict(sliding_window=2.5), r"`sliding_window` must be a positive integer or None, got 2.5"),
        (dict(norm_eps="1e-5"), r"`norm_eps` must be a positive number, got '1e-5'"),
        (dict(tie_word_embeddings="yes"), r"`tie_word_embeddings` must be True or False, got 'yes'"),
    ],
    ids=["string-size", "float-window", "string-eps", "string-flag"],
)
def test_config_values_of_the_wrong_kind_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)
