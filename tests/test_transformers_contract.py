"""TinyLM honours the contracts Transformers' common test suite holds its own causal LMs to.

The upstream suite (`ModelTesterMixin`, `GenerationTesterMixin`, `CausalLMModelTest`, `ConfigTester`,
`PipelineTesterMixin`) is not run here: these are our own tests of the same promises, for the ones the other test files
do not already prove. `tests/README.md` maps every upstream contract to the test that proves it for TinyLM, or says why
it does not apply. Two paths that must agree are compared on logits, never on the greedy tokens of a random model.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CompileConfig,
    DataCollatorWithFlattening,
    GenerationMixin,
    LlamaConfig,
    pipeline,
)

from hf_tinylm import PRESETS, TinyLMConfig, TinyLMForCausalLM, TinyLMModel
from hf_tinylm.model_folder import CheckpointError, check_tinylm_checkpoint
from hf_tinylm.training.tokenizer import byte_level_tokenizer
from tinylm_testing import (
    VOCAB,
    assert_not_degenerate,
    assert_same_logits,
    build,
    save_in_fused_qkv_layout,
    step_logits,
    tiny_config,
)

POSITIONS = ["learned", "sinusoidal", "rotary", "alibi"]
NON_ROTARY = ["learned", "sinusoidal", "alibi"]

every_position_scheme = pytest.mark.parametrize("positions", POSITIONS)


def lively_model(positions="rotary", **overrides) -> TinyLMForCausalLM:
    """A random model whose greedy output does not collapse onto one token: untied, with weights five times GPT-2's
    scale, grouped-query attention (so that key/value heads differ from query heads)."""
    fields = dict(position_embedding_type=positions, num_key_value_heads=2, initializer_range=0.1,
                  tie_word_embeddings=False)
    return build(tiny_config(**{**fields, **overrides}), seed=1)


def token_ids(batch, length, seed=1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


GREEDY = dict(do_sample=False, return_dict_in_generate=True, output_logits=True, pad_token_id=0)


# ------------------------------------------------------------------------------------- configuration (ConfigTester)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_config_round_trips_through_json_save_pretrained_and_auto_config(preset, tmp_path):
    config = TinyLMConfig.from_preset(preset)
    config.save_pretrained(tmp_path)
    expected = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is TinyLMConfig
    assert {k: v for k, v in reloaded.to_dict().items() if k != "_name_or_path"} == expected
    from_json = TinyLMConfig.from_dict(json.loads(config.to_json_string()))
    assert {k: v for k, v in from_json.to_dict().items() if k != "_name_or_path"} == expected
    overridden = TinyLMConfig.from_pretrained(tmp_path, num_hidden_layers=1, norm_eps=1e-3)
    assert (overridden.num_hidden_layers, overridden.norm_eps) == (1, 1e-3)


@torch.no_grad()
def test_output_flags_set_in_the_config_are_honoured():
    """`output_hidden_states`, `output_attentions` and `use_cache` work from the config as well as from the call, as
    upstream's attention/hidden-states tests check. (`return_dict=False` in the config breaks Transformers' own Llama
    as well; the call argument, which upstream tests, is covered in test_ecosystem.py.)"""
    ids = token_ids(2, 6)
    model = build(tiny_config(output_hidden_states=True, output_attentions=True, attn_implementation="eager"))
    out = model(ids)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2 and out.cache is not None
    model.config.output_hidden_states = model.config.output_attentions = model.config.use_cache = False
    out = model(ids)
    assert out.hidden_states is None and out.attentions is None and out.cache is None


# ------------------------------------------------------------------------------------- RoPE: the config says the truth


def legacy_config_json(tmp_path, **fields):
    """A config.json as TinyLM wrote it before learned/sinusoidal/ALiBi configs stopped carrying RoPE defaults."""
    config = tiny_config(**fields).to_dict()
    config.update(rope_parameters={"rope_theta": 10000.0, "rope_type": "default"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("positions", NON_ROTARY)
@pytest.mark.parametrize("source", ["fresh", "gpt2-preset", "saved-and-reloaded", "older-config-json"])
def test_non_rotary_config_carries_no_rope_parameters(positions, source, tmp_path):
    """Upstream decides "this model uses RoPE" by the presence of `rope_parameters` (its causal-LM tests treat any
    config with them as RoPE-scalable, `PreTrainedConfig.__post_init__` fills in defaults for any config with the
    field). A learned, sinusoidal or ALiBi config must not claim RoPE, however it was made, nor regain the defaults
    when saved and reloaded."""
    if source == "fresh":
        config = tiny_config(position_embedding_type=positions)
    elif source == "gpt2-preset":
        config = TinyLMConfig.from_preset("gpt2", position_embedding_type=positions)
    elif source == "saved-and-reloaded":
        tiny_config(position_embedding_type=positions).save_pretrained(tmp_path)
        config = TinyLMConfig.from_pretrained(tmp_path)
    else:
        config = TinyLMConfig.from_pretrained(legacy_config_json(tmp_path, position_embedding_type=positions))
    assert config.rope_parameters is None
    assert config.rope_scaling is None  # upstream's legacy alias
    assert TinyLMConfig.from_dict(config.to_dict()).rope_parameters is None
    config.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()).get("rope_parameters") is None
    # No module upstream would treat as a rotary embedding (`_init_weights`, `dynamic_rope_update` key on these).
    with torch.device("meta"):  # the structure is all that matters here (and the GPT-2 preset is 124M parameters)
        model = TinyLMForCausalLM(config)
    assert not [name for name, module in model.named_modules() if "Rotary" in type(module).__name__]


@pytest.mark.parametrize("positions", NON_ROTARY)
@pytest.mark.parametrize(
    "rope",
    [{"rope_type": "linear", "factor": 2.0}, {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0},
     {"rope_type": "default", "rope_theta": 500000.0}],
    ids=["linear", "yarn", "other-theta"],
)
def test_rope_parameters_given_to_a_non_rotary_config_are_refused(positions, rope):
    """Dropping them silently would leave the user believing the model scales its positions. (The exact default
    `{"rope_type": "default", "rope_theta": 10000.0}` that older TinyLM configs saved stays loadable, see above.)"""
    with pytest.raises(ValueError, match=r"rope_parameters.*rotary|rotary.*rope_parameters"):
        tiny_config(position_embedding_type=positions, rope_parameters=dict(rope))


@pytest.mark.parametrize("positions", NON_ROTARY)
def test_rope_scaling_set_on_a_non_rotary_config_is_refused_when_the_model_is_built(positions):
    """Upstream's RoPE-scaling test edits `config.rope_parameters` of a built config and instantiates the model: for
    a model without RoPE that must fail loudly, not run unscaled as if the scaling had been applied."""
    config = tiny_config(position_embedding_type=positions)
    config.rope_parameters = {"rope_type": "linear", "factor": 10.0, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="rope_parameters"):
        TinyLMModel(config)


@pytest.mark.parametrize("source", ["argument", "config-json"])
def test_legacy_rope_theta_configures_rotary_positions_as_in_llama(source, tmp_path):
    """`PreTrainedConfig` standardises the pre-5.0 top-level `rope_theta` into `rope_parameters` (older Hub
    configs and conversion scripts still write it); a rotary TinyLM config must not keep 10000 instead."""
    fields = dict(position_embedding_type="rotary", rope_theta=500000.0)
    if source == "argument":
        config = tiny_config(**fields)
    else:
        saved = tiny_config(position_embedding_type="rotary").to_dict()
        saved.pop("rope_parameters")
        (tmp_path / "config.json").write_text(json.dumps({**saved, **fields}))
        config = TinyLMConfig.from_pretrained(tmp_path)
    assert LlamaConfig(rope_theta=500000.0).rope_parameters["rope_theta"] == 500000.0  # the reference behaviour
    assert config.rope_parameters["rope_theta"] == 500000.0
    head_dim = config.head_dim
    expected = 1.0 / 500000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    torch.testing.assert_close(TinyLMModel(config).rotary_emb.inv_freq, expected)


def test_legacy_rope_scaling_argument_configures_rotary_positions():
    config = tiny_config(position_embedding_type="rotary", rope_scaling={"type": "linear", "factor": 2.0})
    assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 2.0
    assert TinyLMModel(config).rotary_emb.rope_type == "linear"


# ------------------------------------------------------------------------------------- loading, init, devices, dtypes


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@torch.no_grad()
def test_base_model_and_causal_lm_load_each_others_checkpoints(tied, tmp_path):
    """`base_model_prefix`: a bare `TinyLMModel` checkpoint loads into `TinyLMForCausalLM` (only an untied head is
    missing) and the other way round (only the head is left over), with the same hidden states."""
    config = tiny_config(tie_word_embeddings=tied)
    base = TinyLMModel(config).eval()
    base.save_pretrained(tmp_path / "base")
    causal, info = TinyLMForCausalLM.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == (set() if tied else {"lm_head.weight"})
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (causal.lm_head.weight is causal.model.embed_tokens.weight) == tied
    ids = token_ids(2, 7)
    assert torch.equal(causal.model(ids).last_hidden_state, base(ids).last_hidden_state)

    build(config).save_pretrained(tmp_path / "causal")
    reloaded, info = TinyLMForCausalLM.from_pretrained(tmp_path / "causal", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    _, info = TinyLMModel.from_pretrained(tmp_path / "causal", output_loading_info=True)
    assert info["unexpected_keys"] == (set() if tied else {"lm_head.weight"}) and not info["missing_keys"]


def attention_keys(folder) -> set[str]:
    return {name.split("self_attn.")[1] for name in load_file(folder / "model.safetensors") if "self_attn." in name}


@pytest.mark.parametrize(("tied", "bias", "kv_heads"), [(True, True, 4), (False, False, 2)], ids=["gpt2", "llama"])
@torch.no_grad()
def test_saved_folders_store_q_k_v_and_folders_with_the_earlier_fused_qkv_load_with_the_same_logits(
    tied, bias, kv_heads, tmp_path
):
    """Folders store `q_proj`, `k_proj` and `v_proj`, even though loading registers a conversion from the fused
    `qkv_proj` of earlier versions (which Transformers would otherwise revert when saving, fresh models included). A
    fused folder passes the CLI's check, loads with bit-identical logits, and is saved again in the new layout."""
    model = build(tiny_config(tie_word_embeddings=tied, attention_bias=bias, num_key_value_heads=kv_heads))
    ids = token_ids(2, 7)
    expected = model(ids).logits
    projections = {"q_proj", "k_proj", "v_proj", "o_proj"}
    suffixes = ("weight", "bias") if bias else ("weight",)
    model.save_pretrained(tmp_path / "new")
    assert attention_keys(tmp_path / "new") == {f"{p}.{s}" for p in projections for s in suffixes}

    model.save_pretrained(tmp_path / "fused")
    save_in_fused_qkv_layout(model, tmp_path / "fused")
    assert attention_keys(tmp_path / "fused") == {f"{p}.{s}" for p in ("qkv_proj", "o_proj") for s in suffixes}
    check_tinylm_checkpoint(tmp_path / "fused", model.config)
    loaded, info = TinyLMForCausalLM.from_pretrained(tmp_path / "fused", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    assert torch.equal(loaded(ids).logits, expected)

    loaded.save_pretrained(tmp_path / "resaved")
    assert attention_keys(tmp_path / "resaved") == attention_keys(tmp_path / "new")
    assert torch.equal(TinyLMForCausalLM.from_pretrained(tmp_path / "resaved")(ids).logits, expected)


def test_the_checkpoint_check_refuses_a_fused_qkv_of_the_wrong_size(tmp_path):
    model = build(tiny_config(num_key_value_heads=2))
    model.save_pretrained(tmp_path)
    save_in_fused_qkv_layout(model, tmp_path)
    with pytest.raises(CheckpointError, match=r"qkv_proj.weight' has shape \[64, 32\], but the config requires \[48"):
        check_tinylm_checkpoint(tmp_path, tiny_config(num_key_value_heads=1))


@every_position_scheme
def test_weights_missing_from_a_checkpoint_are_initialised_by_init_weights(positions, tmp_path):
    """With `initializer_range` ~0, every weight `_init_weights` initialises is exactly 0 (matrices, biases) or 1
    (norm scales): a missing weight left uninitialised (torch.empty) or at PyTorch's default init would show."""
    config = tiny_config(position_embedding_type=positions, tie_word_embeddings=False)
    model = build(config)
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    kept = {name: t for name, t in stored.items() if "layers.1." not in name and name != "lm_head.weight"}
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})

    loaded, info = TinyLMForCausalLM.from_pretrained(tmp_path, initializer_range=1e-10, output_loading_info=True)
    assert info["missing_keys"] == set(stored) - set(kept)
    params = dict(loaded.named_parameters())
    for name in info["missing_keys"]:
        value = params[name]
        assert value.abs().max() < 1e-8 or (value - 1).abs().max() < 1e-8, f"{name} was not initialised"
    for name in kept:
        assert torch.equal(params[name], stored[name]), f"{name} was re-initialised although it was loaded"
    with torch.no_grad():
        assert loaded(token_ids(1, 5)).logits.isfinite().all()


@every_position_scheme
@torch.no_grad()
def test_every_tensor_a_module_holds_is_a_parameter_or_buffer(positions):
    """A plain tensor attribute would not follow `model.to(...)`, device maps or `from_pretrained`'s meta init.
    (Upstream's `dynamic_rope_update` itself keeps `max_seq_len_cached` as a plain 0-d tensor: not ours to test.)"""
    config = tiny_config(position_embedding_type=positions)
    model = build(config)
    model(token_ids(1, 12))
    stray = [(name, key) for name, module in model.named_modules() for key, value in vars(module).items()
             if isinstance(value, torch.Tensor)]
    assert not stray
    with torch.device("meta"):
        on_meta = TinyLMForCausalLM(config)
    assert {t.device.type for t in [*on_meta.parameters(), *on_meta.buffers()]} == {"meta"}


@pytest.mark.parametrize("positions", ["sinusoidal", "rotary", "alibi"])  # the schemes with computed buffers
@torch.no_grad()
def test_from_pretrained_keeps_the_saved_dtype_and_honours_an_explicit_one(positions, tmp_path):
    """Transformers 5 loads with `dtype="auto"`: a bf16 checkpoint comes back bf16 (RoPE frequencies, rebuilt after
    loading, stay float32 as in Llama) and `dtype=torch.float32` upcasts it; both compute the saved model's logits."""
    model = build(tiny_config(position_embedding_type=positions))
    ids = token_ids(2, 8)
    reference = model(ids).logits
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    auto = TinyLMForCausalLM.from_pretrained(tmp_path)
    assert {p.dtype for p in auto.parameters()} == {torch.bfloat16}
    if positions == "rotary":
        assert auto.model.rotary_emb.inv_freq.dtype == torch.float32
    upcast = TinyLMForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert {p.dtype for p in upcast.parameters()} == {torch.float32}
    tolerance = 0.05 * reference.abs().max()  # bf16 weights: 8 bits of mantissa
    assert (auto(ids).logits.float() - reference).abs().max() <= tolerance
    assert (upcast(ids).logits - reference).abs().max() <= tolerance


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_attention_implementation_chosen_at_load_time_reaches_every_layer(implementation, tmp_path):
    model = build(tiny_config(position_embedding_type="alibi"))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=implementation)
    assert loaded.config._attn_implementation == implementation
    assert {layer.self_attn.config._attn_implementation for layer in loaded.model.layers} == {implementation}
    ids = token_ids(2, 7)
    assert_same_logits(loaded(ids).logits, model(ids).logits)
    if implementation == "eager":
        assert len(loaded(ids, output_attentions=True).attentions) == 2


# ------------------------------------------------------------------------------------- forward contracts


@every_position_scheme
@torch.no_grad()
def test_inputs_embeds_give_the_logits_of_the_input_ids(positions):
    model = lively_model(positions)
    ids = token_ids(2, 9)
    assert_same_logits(model(inputs_embeds=model.get_input_embeddings()(ids)).logits, model(ids).logits)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_hidden_states_are_embeddings_then_each_layer_ending_with_the_final_output(norm_position):
    """One entry per layer plus the embeddings, the last equal to `last_hidden_state`; hidden states and attention
    maps stay in the autograd graph (upstream's retain-grad test: interpretability tools differentiate them)."""
    model = build(tiny_config(norm_position=norm_position, attn_implementation="eager"))
    ids = token_ids(2, 6)
    out = model.model(ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    out.hidden_states[0].retain_grad()
    out.attentions[0].retain_grad()
    out.last_hidden_state.sum().backward()
    assert out.hidden_states[0].grad.abs().max() > 0 and out.attentions[0].grad.abs().max() > 0


@torch.no_grad()
def test_logits_to_keep_accepts_a_tensor_of_positions():
    model = build(tiny_config())
    ids = token_ids(2, 9)
    keep = torch.tensor([0, 4, 8])
    assert_same_logits(model(ids, logits_to_keep=keep).logits, model(ids).logits[:, keep])


@every_position_scheme
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_packed_sequences_with_restarting_position_ids_attend_only_within_themselves(positions, implementation):
    """Padding-free training (`DataCollatorWithFlattening`): several sequences in one row, told apart by position ids
    that restart at 0. Without a cache (as in training) each must get the logits it gets alone."""
    model = lively_model(positions)
    model.set_attn_implementation(implementation)
    sequences = [token_ids(1, n, seed=n)[0] for n in (5, 7, 4)]
    packed = DataCollatorWithFlattening()([{"input_ids": s.tolist()} for s in sequences])
    logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
    start = 0
    for sequence in sequences:
        alone = model(sequence[None]).logits
        assert_same_logits(logits[:, start : start + len(sequence)], alone)
        start += len(sequence)


@every_position_scheme
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_custom_4d_float_mask_with_position_ids_equals_separate_sequences(positions, implementation):
    """A caller-built additive (B, 1, T, S) mask is used as given: two prompts sharing a prefix, packed as
    prefix + continuation A + continuation B with a mask that hides A from B."""
    model = lively_model(positions)
    model.set_attn_implementation(implementation)
    prefix, first, second = token_ids(1, 4, seed=2), token_ids(1, 3, seed=3), token_ids(1, 3, seed=4)
    packed = torch.cat([prefix, first, second], dim=1)
    allowed = torch.ones(10, 10).tril().bool()
    allowed[7:, 4:7] = False  # the second continuation does not see the first
    mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 4, 5, 6]])
    logits = model(packed, attention_mask=mask, position_ids=position_ids).logits
    assert_same_logits(logits[:, :7], model(torch.cat([prefix, first], dim=1)).logits)
    assert_same_logits(logits[:, 7:], model(torch.cat([prefix, second], dim=1)).logits[:, 4:])


# ------------------------------------------------------------------------------------- embeddings and training hooks


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@torch.no_grad()
def test_resizing_pads_to_a_multiple_shrinks_and_starts_new_rows_at_the_mean_embedding(tied):
    model = lively_model(tie_word_embeddings=tied)
    ids = token_ids(2, 7)
    before = model(ids).logits
    old_rows = model.model.embed_tokens.weight.clone()

    model.resize_token_embeddings(VOCAB + 3, pad_to_multiple_of=8)
    assert model.config.vocab_size == 72 and model.lm_head.weight.shape == (72, 32)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    assert_same_logits(model(ids).logits[..., :VOCAB], before)
    new_rows = model.model.embed_tokens.weight[VOCAB:]
    assert (new_rows.mean(0) - old_rows.mean(0)).abs().max() < 0.05  # mean resizing, not N(0, 0.1) noise
    assert not torch.equal(new_rows[0], new_rows[1])

    model.resize_token_embeddings(40)
    assert model.config.vocab_size == 40 and model.lm_head.weight.shape == (40, 32)
    small = ids.clamp(max=39)
    assert model(small).logits.shape == (2, 7, 40)
    assert torch.equal(model.model.embed_tokens.weight, old_rows[:40])


@torch.no_grad()
def test_replaced_input_and_output_embeddings_are_the_ones_used():
    model = build(tiny_config(tie_word_embeddings=False))
    ids = token_ids(1, 5)
    embeddings = torch.nn.Embedding(VOCAB, 32)
    head = torch.nn.Linear(32, VOCAB, bias=False)
    model.set_input_embeddings(embeddings)
    model.set_output_embeddings(head)
    assert model.get_input_embeddings() is embeddings and model.get_output_embeddings() is head
    hidden = model.model(ids).last_hidden_state
    assert_same_logits(model(ids).logits, head(hidden))
    assert_same_logits(hidden, model.model(inputs_embeds=embeddings(ids)).last_hidden_state)


def gradients(model, ids) -> dict:
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def test_activation_checkpointing_options_keep_the_gradients_and_can_be_turned_off():
    """Reentrant checkpointing, checkpointing every other layer, the deprecated `gradient_checkpointing_enable` alias
    (still what PEFT and older trainers call) and disabling: the gradients never change."""
    model = lively_model("rotary").train()
    ids = token_ids(2, 8)
    plain = gradients(model, ids)
    settings = [
        (dict(activation_checkpointing_kwargs={"use_reentrant": True}), [True, True]),
        (dict(every_n_layers=2), [True, False]),
    ]
    for options, layers in settings:
        model.activation_checkpointing_enable(**options)
        assert [layer.gradient_checkpointing for layer in model.model.layers] == layers
        checkpointed = gradients(model, ids)
        assert checkpointed.keys() == plain.keys()
        for name in plain:
            torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-7, msg=name)
        model.activation_checkpointing_disable()
        assert not any(layer.gradient_checkpointing for layer in model.model.layers)
    with pytest.warns(FutureWarning, match="activation_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    assert gradients(model, ids).keys() == plain.keys()


def test_adapter_style_training_gets_gradients_through_frozen_embeddings_with_reentrant_checkpointing():
    """PEFT freezes the base model: with reentrant checkpointing, a layer's trainable weight gets its gradient only
    if the frozen embeddings' output requires grad (`enable_input_require_grads`)."""
    model = lively_model("alibi").train()
    ids = token_ids(2, 8)
    trainable = model.model.layers[0].mlp.up_proj.weight
    expected = gradients(model, ids)["model.layers.0.mlp.up_proj.weight"]
    for param in model.parameters():
        param.requires_grad_(param is trainable)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    assert set(gradients(model, ids)) == {"model.layers.0.mlp.up_proj.weight"}
    torch.testing.assert_close(trainable.grad, expected, rtol=0, atol=1e-7)


def test_compiled_training_step_gives_the_loss_and_gradients_of_eager():
    torch._dynamo.reset()
    model = lively_model("rotary", sliding_window=4).train()
    ids = token_ids(2, 8)
    eager_loss = model(ids, labels=ids).loss
    expected = gradients(model, ids)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # aot: the backward is traced too
    model.zero_grad()
    loss = compiled(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=0, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=0, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------- generation (GenerationTesterMixin)


def test_causal_lm_generates_and_its_generation_config_comes_from_the_model_config():
    model = build(tiny_config(bos_token_id=1, eos_token_id=2, pad_token_id=0))
    assert isinstance(model, GenerationMixin) and model.can_generate()
    assert not TinyLMModel.can_generate()
    generation = model.generation_config
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 0)
    assert model.main_input_name == "input_ids" and model.base_model is model.model


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@torch.no_grad()
def test_generate_returns_scores_attentions_and_hidden_states_for_every_new_token(use_cache):
    """The shapes `GenerationTesterMixin._check_outputs` expects: one entry per new token; with a cache each step
    after the first sees one query against all keys so far, without it every step sees the whole sequence."""
    model = lively_model("rotary", attn_implementation="eager")
    prompt, new = 6, 4
    out = model.generate(token_ids(2, prompt), max_new_tokens=new, use_cache=use_cache, output_scores=True,
                         output_attentions=True, output_hidden_states=True, **GREEDY)
    assert out.sequences.shape == (2, prompt + new)
    assert len(out.scores) == len(out.logits) == len(out.attentions) == len(out.hidden_states) == new
    assert all(score.shape == (2, VOCAB) for score in out.scores)
    for step in range(new):
        keys = prompt + step
        queries = keys if step == 0 or not use_cache else 1
        assert len(out.attentions[step]) == 2 and len(out.hidden_states[step]) == 3
        assert all(a.shape == (2, 4, queries, keys) for a in out.attentions[step])
        assert all(h.shape == (2, queries, 32) for h in out.hidden_states[step])
    assert (out.cache is not None) == use_cache


@pytest.mark.parametrize("do_sample", [False, True], ids=["beam-search", "beam-sampling"])
@torch.no_grad()
def test_beam_generation_returns_a_score_and_beam_indices_for_every_returned_sequence(do_sample):
    model = lively_model("alibi")
    out = model.generate(token_ids(2, 6), max_new_tokens=5, num_beams=3, num_return_sequences=2,
                         output_scores=True, **{**GREEDY, "do_sample": do_sample})
    assert out.sequences.shape == (4, 11)
    assert out.sequences_scores.shape == (4,) and out.sequences_scores.isfinite().all()
    assert len(out.scores) == 5 and all(score.shape == (2 * 3, VOCAB) for score in out.scores)
    assert out.beam_indices.shape == (4, 5) and ((out.beam_indices >= 0) & (out.beam_indices < 6)).all()


@pytest.mark.parametrize("window", [None, 4], ids=["full", "window4"])
@torch.no_grad()
def test_cache_holds_keys_and_values_per_layer_as_batch_kv_heads_length_head_dim(window):
    """The layout beam search reorders, `crop` and external tools read: (B, K, S, D) with K key/value heads."""
    model = lively_model("rotary", sliding_window=window)
    cache = model(token_ids(3, 9), use_cache=True).cache
    assert len(cache.layers) == 2 and cache.get_seq_length() == 9
    for layer in cache.layers:
        length = layer.keys.shape[2]
        assert layer.keys.shape == layer.values.shape == (3, 2, length, 8)
        assert length == 9 if window is None else length < window


@every_position_scheme
@torch.no_grad()
def test_generate_from_inputs_embeds_matches_generate_from_input_ids(positions):
    """Embeddings alone return only the new tokens; embeddings with their ids return the whole sequence; a static
    cache changes nothing."""
    model = lively_model(positions)
    ids = token_ids(2, 6)
    embeds = model.get_input_embeddings()(ids)
    reference = model.generate(ids, max_new_tokens=8, **GREEDY)
    assert_not_degenerate(reference.sequences[:, 6:], at_least=4)
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=8, **GREEDY)
    assert torch.equal(from_embeds.sequences, reference.sequences[:, 6:])
    assert_same_logits(step_logits(from_embeds), step_logits(reference))
    both = model.generate(ids, inputs_embeds=embeds, max_new_tokens=8, **GREEDY)
    assert torch.equal(both.sequences, reference.sequences)
    static = model.generate(inputs_embeds=embeds, max_new_tokens=8, cache_implementation="static", **GREEDY)
    assert_same_logits(step_logits(static), step_logits(reference))


@every_position_scheme
@torch.no_grad()
def test_generate_continues_from_a_returned_cache_like_one_long_generate(positions):
    model = lively_model(positions)
    ids = token_ids(2, 6)
    whole = model.generate(ids, max_new_tokens=10, **GREEDY)
    assert_not_degenerate(whole.sequences[:, 6:], at_least=4)
    first = model.generate(ids, max_new_tokens=4, **GREEDY)
    continued = model.generate(first.sequences, cache=first.cache, max_new_tokens=6, **GREEDY)
    assert torch.equal(continued.sequences, whole.sequences)
    assert_same_logits(step_logits(continued), step_logits(whole)[:, 4:])


@every_position_scheme
@torch.no_grad()
def test_prompt_lookup_decoding_equals_greedy_decoding(positions):
    """Candidates copied from the prompt are verified in one forward and the cache is cropped after a rejection."""
    model = lively_model(positions)
    prompt = token_ids(1, 4).repeat(1, 3)  # a repeating prompt, so that lookups find candidates
    greedy = model.generate(prompt, max_new_tokens=10, **GREEDY)
    lookup = model.generate(prompt, max_new_tokens=10, prompt_lookup_num_tokens=3, **GREEDY)
    assert torch.equal(lookup.sequences, greedy.sequences)
    assert_same_logits(step_logits(lookup), step_logits(greedy))


@every_position_scheme
@torch.no_grad()
def test_generate_with_a_fullgraph_compiled_forward_gives_the_logits_of_eager_generate(positions):
    """`generate` compiles the decoding forward when the cache is static (on CPU only when asked); `fullgraph`
    makes any graph break an error, and the counting backend proves the compiled graph is the one that ran."""
    torch._dynamo.reset()
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    compile_config = CompileConfig(fullgraph=True, backend=counting_backend, mode=None)
    compile_config._compile_all_devices = True
    model = lively_model(positions)
    ids = token_ids(2, 6)
    eager = model.generate(ids, max_new_tokens=6, cache_implementation="static", **GREEDY)
    compiled = model.generate(ids, max_new_tokens=6, cache_implementation="static", compile_config=compile_config,
                              **GREEDY)
    assert graphs, "generate did not compile the forward"
    assert torch.equal(compiled.sequences, eager.sequences)
    assert_same_logits(step_logits(compiled), step_logits(eager))


@every_position_scheme
@torch.no_grad()
def test_exported_program_computes_the_logits_of_the_model(positions):
    model = lively_model(positions)
    ids = token_ids(2, 7)
    exported = torch.export.export(model, args=(), kwargs={"input_ids": ids, "use_cache": False}, strict=False)
    assert_same_logits(exported.module()(input_ids=ids, use_cache=False).logits, model(ids).logits)


# ------------------------------------------------------------------------------------- pipelines (PipelineTesterMixin)


@torch.no_grad()
def test_feature_extraction_pipeline_returns_the_base_model_hidden_states():
    tokenizer = byte_level_tokenizer()
    model = TinyLMModel(tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)).eval()
    features = pipeline("feature-extraction", model=model, tokenizer=tokenizer)("hello world")
    expected = model(**tokenizer("hello world", return_tensors="pt")).last_hidden_state
    assert_same_logits(torch.tensor(features), expected)
