"""nanoGPT `ckpt.pt` -> TinyLM: parity with nanoGPT's own forward, every checkpoint variant, refusals.

The checkpoints are built here in the layout nanoGPT's `train.py` saves (random wide weights of real shapes), and the
reference is `nanogpt_forward` below: nanoGPT's published architecture written out with torch functions (pre-LayerNorm
with eps 1e-5 and optional bias, causal scaled-dot-product attention, exact GELU MLP, head tied to the embedding).
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conversion_testing import assert_no_output, tokens
from huggingface_hub import ModelCard
from transformers import GPT2LMHeadModel

from hf_tinylm import TinyLMForCausalLM
from hf_tinylm.cli import main
from hf_tinylm.conversion.convert import convert

ATOL = 1e-5  # fp32 logits, converted vs nanogpt_forward
ARGS = dict(n_layer=2, n_head=4, n_embd=32, block_size=64, bias=True, vocab_size=96, dropout=0.0)
VARIANTS = {
    "bias": {},
    "no_bias": dict(bias=False),
    "short_block_more_layers": dict(block_size=24, n_layer=3, n_head=2),
    "padded_gpt2_vocab": dict(vocab_size=50304, n_embd=16, n_layer=1),
}


def nanogpt_state_dict(args: dict, seed: int = 0, compiled: bool = False, mask_buffers: bool = False) -> dict:
    """Random wide weights with the names and shapes of nanoGPT's `GPT(GPTConfig(**args)).state_dict()`."""
    g = torch.Generator().manual_seed(seed)
    C, V, T = args["n_embd"], args["vocab_size"], args["block_size"]

    def weight(*shape):
        return 0.3 * torch.randn(*shape, generator=g)

    def norm(prefix):
        out = {f"{prefix}.weight": 1 + 0.1 * torch.randn(C, generator=g)}
        return {**out, f"{prefix}.bias": weight(C)} if args["bias"] else out

    def linear(prefix, n_out, n_in):
        out = {f"{prefix}.weight": weight(n_out, n_in)}
        return {**out, f"{prefix}.bias": weight(n_out)} if args["bias"] else out

    wte = weight(V, C)
    state = {"transformer.wte.weight": wte, "transformer.wpe.weight": weight(T, C)}
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}"
        state |= norm(f"{h}.ln_1") | linear(f"{h}.attn.c_attn", 3 * C, C) | linear(f"{h}.attn.c_proj", C, C)
        state |= norm(f"{h}.ln_2") | linear(f"{h}.mlp.c_fc", 4 * C, C) | linear(f"{h}.mlp.c_proj", C, 4 * C)
        if mask_buffers:  # nanoGPT's attention without flash registers its causal mask as a buffer
            state[f"{h}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    state |= norm("transformer.ln_f")
    state["lm_head.weight"] = wte  # tied: one tensor under both names, as nanoGPT saves it
    return {f"_orig_mod.{name}": tensor for name, tensor in state.items()} if compiled else state


def save_ckpt(path: Path, args: dict, model: dict) -> Path:
    """`model` saved as nanoGPT's train.py saves a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                 "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "weight_decay": 0.1, "params": [0]}]}  # fmt: skip
    config = {"out_dir": "out", "batch_size": 12, "learning_rate": 6e-4, "compile": True, "dataset": "openwebtext"}
    saved = {"model": model, "optimizer": optimizer, "model_args": args, "iter_num": 3000,
             "best_val_loss": torch.tensor(2.8512), "config": config}  # fmt: skip
    torch.save(saved, path)
    return path


def nanogpt_forward(state: dict, args: dict, idx: torch.Tensor) -> torch.Tensor:
    """nanoGPT's forward (its published architecture) on a state dict with nanoGPT's names: logits at every position."""
    state = {name.removeprefix("_orig_mod."): tensor for name, tensor in state.items()}
    C, H = args["n_embd"], args["n_head"]

    def p(name):
        return state.get(name)  # None for a missing bias

    def layer_norm(x, prefix):
        return F.layer_norm(x, (C,), p(f"{prefix}.weight"), p(f"{prefix}.bias"), eps=1e-5)

    def linear(x, prefix):
        return F.linear(x, p(f"{prefix}.weight"), p(f"{prefix}.bias"))

    B, T = idx.shape
    x = p("transformer.wte.weight")[idx] + p("transformer.wpe.weight")[torch.arange(T)]
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}"
        q, k, v = linear(layer_norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + linear(y, f"{h}.attn.c_proj")
        x = x + linear(F.gelu(linear(layer_norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc")), f"{h}.mlp.c_proj")
    return F.linear(layer_norm(x, "transformer.ln_f"), p("lm_head.weight"))


def greedy(next_logits, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    sequence = prompt
    for _ in range(steps):
        sequence = torch.cat([sequence, next_logits(sequence)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return sequence


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_matches_nanogpt_forward_and_greedy_generation(variant, tmp_path):
    args = {**ARGS, **VARIANTS[variant]}
    state = nanogpt_state_dict(args)
    save_ckpt(tmp_path / "out" / "ckpt.pt", args, state)
    result = convert(tmp_path / "out", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")

    vocab = model.config.vocab_size
    input_ids = tokens(vocab, (3, min(20, args["block_size"])))
    with torch.no_grad():
        expected = nanogpt_forward(state, args, input_ids)[..., :vocab]
        assert (model(input_ids).logits - expected).abs().max().item() <= ATOL
    assert result.source_format == "nanogpt" and result.max_abs_logits_diff <= ATOL
    prompt = input_ids[:2, :6]
    with torch.no_grad():
        reference = greedy(lambda ids: nanogpt_forward(state, args, ids)[..., :vocab], prompt, 10)
    assert torch.equal(model.generate(prompt, max_new_tokens=10, do_sample=False, pad_token_id=0), reference)


def test_compiled_model_keys_and_mask_buffers_convert_to_the_same_model(tmp_path):
    state = nanogpt_state_dict(ARGS)
    save_ckpt(tmp_path / "plain.pt", ARGS, state)
    save_ckpt(tmp_path / "compiled.pt", ARGS, nanogpt_state_dict(ARGS, compiled=True, mask_buffers=True))
    convert(tmp_path / "plain.pt", tmp_path / "a", progress=False)
    convert(tmp_path / "compiled.pt", tmp_path / "b", progress=False)
    a = TinyLMForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = TinyLMForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_bias_free_checkpoint_becomes_a_bias_free_tinylm(tmp_path):
    args = {**ARGS, "bias": False}
    save_ckpt(tmp_path / "ckpt.pt", args, nanogpt_state_dict(args))
    convert(tmp_path / "ckpt.pt", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")
    assert not model.config.attention_bias and not model.config.mlp_bias
    assert torch.equal(model.model.layers[0].attn_norm.bias, torch.zeros(ARGS["n_embd"]))


def test_padded_vocabulary_is_cut_to_the_tokenizers_and_the_card_says_so(tmp_path):
    args = {**ARGS, **VARIANTS["padded_gpt2_vocab"]}
    save_ckpt(tmp_path / "ckpt.pt", args, nanogpt_state_dict(args))
    result = convert(tmp_path / "ckpt.pt", tmp_path / "tinylm", progress=False)
    config = json.loads((tmp_path / "tinylm" / "config.json").read_text())
    assert config["vocab_size"] == 50257 and config["eos_token_id"] == 50256
    card = ModelCard.load(tmp_path / "tinylm" / "README.md")
    assert "the 47 padding rows, so they were cut" in card.text and "nanogpt" in card.data.tags
    assert any("iteration 3000, best validation loss 2.8512" in note for note in result.notes)


def test_nanogpt_converts_on_to_a_gpt2_folder_with_parity(tmp_path):
    state = nanogpt_state_dict(ARGS)
    save_ckpt(tmp_path / "ckpt.pt", ARGS, state)
    result = convert(tmp_path / "ckpt.pt", tmp_path / "gpt2", to="gpt2", progress=False)
    gpt2 = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
    input_ids = tokens(ARGS["vocab_size"])
    with torch.no_grad():
        assert (gpt2(input_ids).logits - nanogpt_forward(state, ARGS, input_ids)).abs().max().item() <= ATOL
    assert result.max_abs_logits_diff <= ATOL


class NotATensor:
    pass


def break_checkpoint(path: Path, how: str) -> str:
    """Save a damaged nanoGPT checkpoint at `path`; returns the text the error must contain."""
    state = nanogpt_state_dict(ARGS)
    if how == "pickled_object":
        torch.save({"model": state, "model_args": ARGS, "config": NotATensor()}, path)
        return "weights_only=True"
    if how == "plain_state_dict":
        torch.save(state, path)
        return "is not a nanoGPT checkpoint"
    if how == "missing_model_arg":
        save_ckpt(path, {k: v for k, v in ARGS.items() if k != "block_size"}, state)
        return "lack block_size"
    if how == "missing_tensor":
        del state["transformer.h.1.mlp.c_fc.weight"]
    elif how == "misshaped_tensor":
        state["transformer.h.0.attn.c_attn.weight"] = state["transformer.h.0.attn.c_attn.weight"].t()
    elif how == "wrong_bias_flag":
        save_ckpt(path, {**ARGS, "bias": False}, state)
        return "does not: transformer.h.0.attn.c_attn.bias"
    save_ckpt(path, ARGS, state)
    if how == "missing_tensor":
        return "missing 1 nanoGPT tensor(s): transformer.h.1.mlp.c_fc.weight"
    return "'transformer.h.0.attn.c_attn.weight' has shape [32, 96]"


@pytest.mark.parametrize("how", ["pickled_object", "plain_state_dict", "missing_model_arg", "missing_tensor",
                                 "misshaped_tensor", "wrong_bias_flag"])  # fmt: skip
def test_bad_checkpoint_fails_in_one_line_with_exit_1_and_no_output(how, tmp_path, capsys):
    expected = break_checkpoint(tmp_path / "ckpt.pt", how)
    assert main(["convert", str(tmp_path / "ckpt.pt"), str(tmp_path / "tinylm"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: ") and expected in err and err.count("\n") == 1, err
    assert_no_output(tmp_path / "tinylm")
