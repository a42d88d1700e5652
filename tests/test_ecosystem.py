"""TinyLM behaves as a Transformers model: Auto classes, tying, outputs, loss, cache, compile, init, pipeline."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, StaticCache

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM, TinyLMModel
from tinylm_testing import build, tiny_config


def test_import_registers_tinylm_with_the_auto_classes():
    config = AutoConfig.for_model("tinylm", vocab_size=64, hidden_size=32, num_hidden_layers=2)
    assert isinstance(config, TinyLMConfig)
    assert type(AutoModelForCausalLM.from_config(config)) is TinyLMForCausalLM
    assert type(AutoModel.from_config(config)) is TinyLMModel


def test_saved_folder_carries_code_and_auto_map_and_loads_through_auto_classes(tmp_path):
    model = build(tiny_config())
    model.save_pretrained(tmp_path)
    assert {"configuration_tinylm.py", "modeling_tinylm.py", "generation_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_tinylm.TinyLMConfig",
        "AutoModel": "modeling_tinylm.TinyLMModel",
        "AutoModelForCausalLM": "modeling_tinylm.TinyLMForCausalLM",
        "AutoModelForSequenceClassification": "modeling_tinylm.TinyLMForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_tinylm.TinyLMForTokenClassification",
        "AutoModelForQuestionAnswering": "modeling_tinylm.TinyLMForQuestionAnswering",
    }
    ids = torch.randint(1, 64, (2, 7))
    causal = AutoModelForCausalLM.from_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is TinyLMModel
    with torch.no_grad():
        assert torch.equal(causal(ids).logits, model(ids).logits)
        assert torch.equal(base(ids).last_hidden_state, model.model(ids).last_hidden_state)


def test_embedding_accessors_and_resizing_keep_the_head_tied(tmp_path):
    model = build(tiny_config())
    assert model.get_input_embeddings() is model.model.embed_tokens
    assert model.get_output_embeddings() is model.lm_head
    model.resize_token_embeddings(80)
    assert model.config.vocab_size == 80
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model(torch.tensor([[79]])).logits.shape == (1, 1, 80)  # the new id is now valid
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as stored:
        assert "lm_head.weight" not in stored.keys()
        assert stored.get_slice("model.embed_tokens.weight").get_shape() == [80, 32]


@torch.no_grad()
def test_logits_to_keep_computes_only_the_last_positions():
    model = build(tiny_config())
    ids = torch.randint(1, 64, (2, 9))
    full = model(ids).logits
    last = model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, 64)
    assert torch.allclose(last, full[:, -1:], atol=1e-6)


@torch.no_grad()
def test_hidden_states_attentions_and_tuple_outputs():
    model = build(tiny_config(), seed=1)
    model.set_attn_implementation("eager")
    ids = torch.randint(1, 64, (2, 6))
    out = model(ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 6, 32) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[0], model.model.embed_tokens(ids) + model.model.embed_positions(
        torch.arange(6)[None]))
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 6, 6)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 4, 6), atol=1e-6)  # rows are distributions
    assert out.attentions[0][0, 0].triu(1).abs().max() == 0  # causal
    as_tuple = model(ids, labels=ids, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], out.logits)


def test_loss_is_shifted_cross_entropy_and_honours_num_items_in_batch():
    model = build(tiny_config())
    ids = torch.randint(1, 64, (2, 8))
    labels = ids.clone()
    labels[0, :3] = -100
    out = model(ids, labels=labels)
    logits, targets = out.logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100))
    summed = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
    assert torch.allclose(model(ids, labels=labels, num_items_in_batch=torch.tensor(50)).loss, summed / 50)


def test_initialisation_follows_gpt2_with_scaled_residual_projections():
    config = tiny_config(hidden_size=256, num_attention_heads=8, intermediate_size=1024, num_hidden_layers=8)
    torch.manual_seed(0)
    model = TinyLMForCausalLM(config)
    layer = model.model.layers[3]
    residual_std = 0.02 / math.sqrt(2 * 8)
    for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
        assert projection.weight.std().item() == pytest.approx(0.02, rel=0.03)
        assert projection.bias.abs().max() == 0
    assert layer.self_attn.o_proj.weight.std().item() == pytest.approx(residual_std, rel=0.03)
    assert layer.mlp.down_proj.weight.std().item() == pytest.approx(residual_std, rel=0.03)
    assert model.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert torch.equal(layer.attn_norm.weight, torch.ones(256)) and torch.equal(layer.attn_norm.bias, torch.zeros(256))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary", "alibi"])
@torch.no_grad()
def test_static_cache_decode_step_compiles_without_graph_breaks(positions):
    model = build(tiny_config(position_embedding_type=positions, num_key_value_heads=2))
    prompt = torch.randint(1, 64, (1, 6))
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False)

    cache = StaticCache(config=model.config, max_cache_len=16)
    logits = model(prompt, cache=cache, use_cache=True).logits
    step = torch.compile(model.forward, fullgraph=True, backend="eager")  # fullgraph: any graph break raises
    tokens = [logits[:, -1].argmax(-1, keepdim=True)]
    for position in range(6, 10):
        logits = step(input_ids=tokens[-1], cache=cache, use_cache=True,
                      position_ids=torch.tensor([[position]])).logits
        tokens.append(logits[:, -1].argmax(-1, keepdim=True))
    assert torch.equal(torch.cat([prompt, *tokens], dim=1), expected)


def test_pipeline_generates_batched_left_padded_with_the_real_gpt2_tokenizer(shared_data):
    from transformers import GPT2TokenizerFast, pipeline

    tokenizer = GPT2TokenizerFast.from_pretrained(shared_data / "gpt2-tokenizer")
    tokenizer.pad_token = tokenizer.eos_token
    model = build(tiny_config(vocab_size=len(tokenizer), max_position_embeddings=128,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id))
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompts = ["Hello", "The quick brown fox jumps over the lazy", "Transformers"]
    settings = dict(max_new_tokens=12, do_sample=False, return_full_text=False)
    batched = generator(prompts, batch_size=3, **settings)
    one_by_one = [generator(prompt, **settings) for prompt in prompts]
    assert tokenizer.padding_side == "left"
    assert [b[0]["generated_text"] for b in batched] == [o[0]["generated_text"] for o in one_by_one]
    assert all(len(tokenizer(o[0]["generated_text"]).input_ids) >= 6 for o in one_by_one)


def test_pad_token_embedding_is_initialised_and_learned_like_any_other():
    """GPT-2 pads with its end-of-text token, so the pad id's embedding row must not be frozen at zero."""
    model = build(tiny_config(pad_token_id=5, eos_token_id=5))
    row = model.model.embed_tokens.weight[5]
    assert row.abs().max() > 0
    ids = torch.tensor([[5, 7, 5, 9, 11, 5]])
    model(ids, labels=ids).loss.backward()
    assert model.model.embed_tokens.weight.grad[5].abs().max() > 0
