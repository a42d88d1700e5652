"""Property-based tests over the whole configuration space (`hypothesis`): every valid configuration behaves, every
invalid one is refused at construction with a ValueError that names the field.

The `ci` profile (the default, see conftest.py) runs 50 examples per property with a fixed seed; run
`python -m pytest tests/test_properties.py --hypothesis-profile=thorough` for 500 random ones.
"""

import tempfile

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.configuration_tinylm import MLP_TYPES, NORM_POSITIONS, NORM_TYPES, POSITION_EMBEDDING_TYPES, ROPE_TYPES
from tinylm_testing import build

VOCAB, PROMPT, NEW_TOKENS = 48, 5, 6
TOL = 1e-5  # fp32 max |Δlogits| between two computations of the same thing
ACTIVATIONS = {"mlp": ["gelu_new", "gelu", "relu"], "glu": ["silu", "gelu"]}


def rope_parameters(head_dim: int):
    """Every RoPE type TinyLM supports, with valid parameters for a context of 32."""
    theta = st.sampled_from([100.0, 10000.0])
    factor = st.sampled_from([1.0, 2.0, 4.0])
    return st.one_of(
        st.builds(lambda t: {"rope_type": "default", "rope_theta": t}, theta),
        st.builds(lambda t, f: {"rope_type": "linear", "rope_theta": t, "factor": f}, theta, factor),
        st.builds(lambda t, f: {"rope_type": "dynamic", "rope_theta": t, "factor": f}, theta, factor),
        st.builds(lambda t, f: {"rope_type": "yarn", "rope_theta": t, "factor": f,
                                "original_max_position_embeddings": 16}, theta, factor),
        st.builds(lambda t, f: {"rope_type": "llama3", "rope_theta": t, "factor": f, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, theta, factor),
        st.builds(lambda t: {"rope_type": "longrope", "rope_theta": t, "original_max_position_embeddings": 16,
                             "short_factor": [1.0] * (head_dim // 2), "long_factor": [2.0] * (head_dim // 2)},
                  theta),
    )


@st.composite
def config_fields(draw) -> dict:
    """The keyword arguments of a valid, small TinyLMConfig, across every variant field."""
    heads = draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([4, 8]))
    mlp_type = draw(st.sampled_from(MLP_TYPES))
    positions = draw(st.sampled_from(POSITION_EMBEDDING_TYPES))
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=heads * draw(st.sampled_from([4, 8])),
        num_attention_heads=heads,
        num_key_value_heads=draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0])),  # MQA ... MHA
        head_dim=head_dim,
        num_hidden_layers=draw(st.integers(1, 2)),
        intermediate_size=draw(st.sampled_from([8, 24])),
        max_position_embeddings=32,
        position_embedding_type=positions,
        norm_type=draw(st.sampled_from(NORM_TYPES)),
        norm_position=draw(st.sampled_from(NORM_POSITIONS)),
        mlp_type=mlp_type,
        hidden_act=draw(st.sampled_from(ACTIVATIONS[mlp_type])),
        attention_bias=draw(st.booleans()),
        mlp_bias=draw(st.booleans()),
        attention_scale=draw(st.sampled_from([None, 0.3])),
        scale_attn_by_inverse_layer_idx=draw(st.booleans()),
        sliding_window=draw(st.sampled_from([None, 3, 6])),
        tie_word_embeddings=draw(st.booleans()),
        initializer_range=0.1,
        pad_token_id=0,
    )
    if positions == "rotary":
        fields["rope_parameters"] = draw(rope_parameters(head_dim))
    return fields


def model_of(fields: dict) -> TinyLMForCausalLM:
    return build(TinyLMConfig(**fields))  # eval mode, norms randomised so that every weight moves the logits


def token_ids(*shape) -> torch.Tensor:
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(0))


def left_padded_batch():
    """Two rows: 3 pads then 5 tokens, and 8 tokens; the real tokens of each, and the attention mask."""
    short, long = token_ids(1, 5), token_ids(1, 8)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    return batch, mask, (short, long)


valid_configs = given(fields=config_fields())


@valid_configs
@torch.no_grad()
def test_generation_scores_equal_a_full_forward_over_the_generated_sequence(fields):
    model = model_of(fields)
    torch.manual_seed(0)
    output = model.generate(token_ids(2, PROMPT), max_new_tokens=NEW_TOKENS, do_sample=True, top_k=0,
                            return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    steps = torch.stack(output.logits, dim=1)
    full = model(output.sequences).logits[:, PROMPT - 1 : -1]
    assert (steps - full).abs().max() <= TOL


@valid_configs
@torch.no_grad()
def test_left_padding_changes_nothing_for_the_real_tokens(fields):
    model = model_of(fields)
    batch, mask, (short, long) = left_padded_batch()
    logits = model(batch, attention_mask=mask).logits
    assert (logits[0, 3:] - model(short).logits[0]).abs().max() <= TOL
    assert (logits[1] - model(long).logits[0]).abs().max() <= TOL


def logits_by_kernel(fields, *implementations):
    model = model_of(fields)
    batch, mask, _ = left_padded_batch()
    logits = []
    for implementation in implementations:
        model.set_attn_implementation(implementation)
        logits.append(model(batch, attention_mask=mask).logits[mask.bool()])
    return logits


@valid_configs
@torch.no_grad()
def test_eager_and_sdpa_attention_agree(fields):
    eager, sdpa = logits_by_kernel(fields, "eager", "sdpa")
    assert (eager - sdpa).abs().max() <= TOL


@settings(max_examples=4)  # flex compiles a kernel for each new shape: ~5 s a draw on a CPU
@valid_configs
@torch.no_grad()
def test_flex_attention_agrees_with_eager(fields):
    eager, flex = logits_by_kernel(fields, "eager", "flex_attention")
    assert (eager - flex).abs().max() <= TOL


@settings(suppress_health_check=[HealthCheck.too_slow])
@valid_configs
@torch.no_grad()
def test_save_and_load_are_bit_exact_and_store_the_tie_once(fields):
    model = model_of(fields)
    ids = token_ids(2, 7)
    expected = model(ids).logits
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        with safe_open(f"{folder}/model.safetensors", "pt") as stored:
            assert ("lm_head.weight" in stored.keys()) != fields["tie_word_embeddings"]
        for reloaded in (TinyLMForCausalLM.from_pretrained(folder),
                         AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)):
            assert torch.equal(reloaded(ids).logits, expected)
            tied = reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
            assert tied == fields["tie_word_embeddings"]
            for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
                assert torch.equal(a, b), name


@valid_configs
def test_gradients_reach_every_parameter_and_survive_gradient_checkpointing(fields):
    model = model_of(fields).train()
    ids = token_ids(2, 9)

    def gradients():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    plain = gradients()
    for name, grad in plain.items():
        assert grad.abs().max() > 0, f"no gradient reaches {name}"
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-6, msg=name)


@valid_configs
@torch.no_grad()
def test_resizing_the_vocabulary_keeps_the_tie_and_the_old_tokens_logits(fields):
    model = model_of(fields)
    ids = token_ids(2, 7)
    before = model(ids).logits
    model.resize_token_embeddings(VOCAB + 5)
    after = model(ids).logits
    assert after.shape[-1] == VOCAB + 5
    assert (after[..., :VOCAB] - before).abs().max() <= TOL
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert tied == fields["tie_word_embeddings"]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
@valid_configs
@torch.no_grad()
def test_half_precision_logits_stay_close_to_float32(fields, dtype, tolerance):
    """Stated tolerance: max |Δlogits| relative to the largest |logit| (bf16 keeps 8 bits of mantissa, fp16 11)."""
    model = model_of(fields)
    ids = token_ids(2, 9)
    reference = model(ids).logits
    half = model.to(dtype)(ids).logits.float()
    assert half.dtype == torch.float32 and not half.isnan().any()
    assert (half - reference).abs().max() <= tolerance * reference.abs().max()


# ----------------------------------------------------------------------------------------------- invalid configs

RANDOM_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


def mutation():
    """One way to break a valid config: (field named in the error, the fields to change)."""
    return st.one_of(
        st.builds(lambda name: ("position_embedding_type", {"position_embedding_type": name}),
                  RANDOM_NAME.filter(lambda n: n not in POSITION_EMBEDDING_TYPES)),
        st.builds(lambda name: ("norm_type", {"norm_type": name}), RANDOM_NAME.filter(lambda n: n not in NORM_TYPES)),
        st.builds(lambda name: ("norm_position", {"norm_position": name}),
                  RANDOM_NAME.filter(lambda n: n not in NORM_POSITIONS)),
        st.builds(lambda name: ("mlp_type", {"mlp_type": name}), RANDOM_NAME.filter(lambda n: n not in MLP_TYPES)),
        st.builds(lambda name: ("hidden_act", {"hidden_act": name + "_act"}), RANDOM_NAME),
        st.builds(lambda field, value: (field, {field: value}),
                  st.sampled_from(["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "max_position_embeddings", "num_key_value_heads", "head_dim", "intermediate_size",
                                   "sliding_window"]),
                  st.one_of(st.integers(max_value=0), st.floats(0.5, 64), st.just("8"), st.just(True))),
        st.builds(lambda field, value: (field, {field: value}),
                  st.sampled_from(["embedding_dropout", "attention_dropout", "residual_dropout"]),
                  st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, -0.01), st.just("0.1"))),
        st.builds(lambda field, value: (field, {field: value}),
                  st.sampled_from(["norm_eps", "initializer_range", "attention_scale"]),
                  st.one_of(st.floats(-1.0, 0.0), st.just("1e-5"))),
        st.builds(lambda field, value: (field, {field: value}),
                  st.sampled_from(["attention_bias", "mlp_bias", "tie_word_embeddings", "use_cache"]),
                  st.sampled_from(["yes", 1, None])),
        st.just(("hidden_size", {"hidden_size": 30, "num_attention_heads": 4})),
        st.just(("num_key_value_heads", {"num_attention_heads": 4, "num_key_value_heads": 3})),
        st.just(("head_dim", {"position_embedding_type": "rotary", "hidden_size": 20, "num_attention_heads": 4,
                              "head_dim": None})),
        st.builds(lambda rope: ("rope_parameters", {"position_embedding_type": "rotary", "rope_parameters": rope}),
                  st.one_of(
                      st.builds(lambda name: {"rope_type": name}, RANDOM_NAME.filter(lambda n: n not in ROPE_TYPES)),
                      st.sampled_from([{"rope_type": kind} for kind in ("linear", "dynamic", "yarn", "llama3",
                                                                        "longrope")]),
                      st.builds(lambda kind, f: {"rope_type": kind, "factor": f},
                                st.sampled_from(["linear", "dynamic", "yarn"]), st.floats(-5.0, 0.99)),
                      st.builds(lambda t: {"rope_type": "default", "rope_theta": t}, st.floats(-1e4, 0.0)),
                      st.just({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                               "original_max_position_embeddings": 16}),
                      st.just({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
                               "original_max_position_embeddings": 16}),
                      st.just({"rope_type": "default", "partial_rotary_factor": 0.5}),
                      st.just("default"),
                  )),
    )


@given(fields=config_fields(), broken=mutation())
@example(  # found while writing this test: a string size failed with a TypeError inside __post_init__
    fields={"vocab_size": VOCAB, "hidden_size": 8, "num_attention_heads": 2},
    broken=("hidden_size", {"hidden_size": "8"}))
@example(  # found while writing this test: a RoPE type without its `factor` surfaced as a KeyError in the model
    fields={"vocab_size": VOCAB},
    broken=("rope_parameters", {"position_embedding_type": "rotary", "rope_parameters": {"rope_type": "linear"}}))
def test_invalid_config_is_refused_at_construction_naming_the_field(fields, broken):
    field, changes = broken
    with pytest.raises(ValueError, match=field):
        TinyLMConfig(**{**fields, **changes})
