"""TinyLM computes exactly what Transformers' own GPT-2 and Llama compute, given the same weights."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from tinylm_testing import assert_same_generation, generate_with_logits

TOL = 1e-5  # fp32 max abs logit difference


def randomise_norms(model):
    """Norm weights start at exactly 1 and 0; move them so that a wrongly mapped norm cannot go unnoticed."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))


def gpt2_weights_for_tinylm(gpt2: GPT2LMHeadModel) -> dict:
    """GPT-2's Conv1D weights are [in, out]; TinyLM's nn.Linear weights are [out, in]. GPT-2's c_attn holds q, k and
    v side by side along its last dim: split into thirds, each transposed."""
    sd, out = gpt2.state_dict(), {}
    out["model.embed_tokens.weight"] = sd["transformer.wte.weight"]
    out["model.embed_positions.weight"] = sd["transformer.wpe.weight"]
    out["model.norm.weight"], out["model.norm.bias"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
    out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(gpt2.config.n_layer):
        src, dst = f"transformer.h.{i}.", f"model.layers.{i}."
        for a, b in [("ln_1", "attn_norm"), ("ln_2", "mlp_norm")]:
            out[f"{dst}{b}.weight"], out[f"{dst}{b}.bias"] = sd[f"{src}{a}.weight"], sd[f"{src}{a}.bias"]
        for a, b in [("attn.c_proj", "self_attn.o_proj"), ("mlp.c_fc", "mlp.up_proj"), ("mlp.c_proj", "mlp.down_proj")]:
            out[f"{dst}{b}.weight"], out[f"{dst}{b}.bias"] = sd[f"{src}{a}.weight"].T, sd[f"{src}{a}.bias"]
        weights, biases = sd[f"{src}attn.c_attn.weight"].chunk(3, dim=1), sd[f"{src}attn.c_attn.bias"].chunk(3)
        for x, weight, bias in zip("qkv", weights, biases):
            out[f"{dst}self_attn.{x}_proj.weight"], out[f"{dst}self_attn.{x}_proj.bias"] = weight.T, bias
    return out


def llama_weights_for_tinylm(llama: LlamaForCausalLM) -> dict:
    sd, out = llama.state_dict(), {}
    out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"]
    out["model.norm.weight"] = sd["model.norm.weight"]
    out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(llama.config.num_hidden_layers):
        p = f"model.layers.{i}."
        out[p + "attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[p + "mlp_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        for x in ("q", "k", "v", "o"):
            out[p + f"self_attn.{x}_proj.weight"] = sd[p + f"self_attn.{x}_proj.weight"]
        for x in ("gate", "up", "down"):
            out[p + f"mlp.{x}_proj.weight"] = sd[p + f"mlp.{x}_proj.weight"]
    return out


def load_exactly(model, weights):
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # A tied head is one tensor under two names, so with tying on only lm_head may be "missing".
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model.eval()


def assert_same_logits_and_generations(tiny, reference):
    """Logits on 40 random tokens within TOL; and 24 generated tokens after an 8-token prompt, greedy and sampled
    (so that the sequence varies), the same tokens with every step's logits within TOL."""
    ids = torch.randint(0, 128, (3, 40))
    assert (tiny(ids).logits - reference(ids).logits).abs().max() <= TOL
    prompt = ids[:, :8]
    for settings in (dict(do_sample=False), dict(do_sample=True, top_k=0)):
        settings.update(max_new_tokens=24, pad_token_id=0)
        expected = generate_with_logits(reference, prompt, **settings)
        assert_same_generation(generate_with_logits(tiny, prompt, **settings), expected, atol=TOL)
    assert len(set(expected.sequences[0, 8:].tolist())) >= 8, "the sampled sequence should vary"


def test_gpt2_preset_has_exactly_the_parameters_of_gpt2():
    ours = TinyLMForCausalLM(TinyLMConfig.from_preset("gpt2")).num_parameters()
    assert ours == GPT2LMHeadModel(GPT2Config()).num_parameters() == 124_439_808


@pytest.mark.parametrize(
    "options",
    [{}, {"activation_function": "gelu", "layer_norm_epsilon": 1e-6, "n_inner": 96},
     {"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}],
    ids=["default", "gelu-eps-ninner", "unscaled", "inverse-layer-scaling"],
)
@torch.no_grad()
def test_gpt2_style_tinylm_matches_gpt2lmheadmodel(options):
    torch.manual_seed(0)
    gpt2_config = GPT2Config(vocab_size=128, n_positions=64, n_embd=64, n_layer=3, n_head=4, **options)
    gpt2 = GPT2LMHeadModel(gpt2_config).eval()
    randomise_norms(gpt2)
    tiny = TinyLMForCausalLM(TinyLMConfig.from_preset(
        "gpt2", vocab_size=128, max_position_embeddings=64, hidden_size=64, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=gpt2_config.n_inner or 256,
        hidden_act=gpt2_config.activation_function, norm_eps=gpt2_config.layer_norm_epsilon,
        attention_scale=None if gpt2_config.scale_attn_weights else 1.0,
        scale_attn_by_inverse_layer_idx=gpt2_config.scale_attn_by_inverse_layer_idx,
    ))
    load_exactly(tiny, gpt2_weights_for_tinylm(gpt2))
    assert_same_logits_and_generations(tiny, gpt2)


@pytest.mark.parametrize(
    "rope_parameters",
    [{"rope_type": "default", "rope_theta": 10000.0},
     {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
     {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
     {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0, "original_max_position_embeddings": 16}],
    ids=lambda p: p["rope_type"],
)
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.no_grad()
def test_llama_style_tinylm_matches_llamaforcausallm(rope_parameters, tied):
    torch.manual_seed(0)
    shape = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=tied, bos_token_id=1,
                 eos_token_id=2)  # Llama's special tokens, so that both stop at the same end-of-sequence
    llama = LlamaForCausalLM(LlamaConfig(**shape, rms_norm_eps=1e-6, rope_parameters=dict(rope_parameters))).eval()
    randomise_norms(llama)
    tiny = TinyLMForCausalLM(TinyLMConfig.from_preset("llama-tiny", **shape, rope_parameters=dict(rope_parameters)))
    load_exactly(tiny, llama_weights_for_tinylm(llama))

    # 40 + 24 tokens run past max_position_embeddings=32: rotary positions have no hard limit, and dynamic
    # scaling only starts beyond it.
    assert_same_logits_and_generations(tiny, llama)
