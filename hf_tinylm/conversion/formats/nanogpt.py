"""nanoGPT checkpoints: the `ckpt.pt` that nanoGPT's `train.py` writes (a dict with `model`, `model_args`, `config`,
`iter_num`, `best_val_loss`, `optimizer`), read with `weights_only=True`; read only.

nanoGPT's model is GPT-2's architecture (learned positions, pre-LayerNorm with eps 1e-5, exact-erf GELU MLP of 4x
width, scaled causal attention, head tied to the token embeddings) written with `nn.Linear`, so its tensors map onto
GPT-2's layout (`gpt2.py`) by name, the four projection weights transposed into GPT-2's `Conv1D` [in, out]. A
`bias=False` checkpoint has no biases at all: LayerNorm biases become zeros (TinyLM's LayerNorm always has one, and
adding zero is exact) and the linear layers have none (`attention_bias=mlp_bias=False`). A compiled model's keys
(`_orig_mod.` prefix) and the causal-mask buffers of nanoGPT's non-flash attention are handled.
"""

import dataclasses
import pickle
from pathlib import Path

import torch
from transformers import GPT2Config

from ...model_folder import unset_fields
from ..base import Checkpoint, ConversionError, Format, check_tensors
from .gpt2 import gpt2_checkpoint, gpt2_expected_shapes

CHECKPOINT_FILE = "ckpt.pt"
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")
# nanoGPT pads GPT-2's 50,257-token vocabulary to 50,304 (a multiple of 64) for speed; no token maps to the padding.
PADDED_GPT2_VOCAB, GPT2_VOCAB = 50304, 50257
_COMPILED_PREFIX = "_orig_mod."
_MASK_BUFFER_SUFFIX = ".attn.bias"  # the causal mask of nanoGPT's non-flash attention: not a weight

_NANOGPT_LAYER_TENSORS = (  # (nanoGPT suffix = GPT-2 suffix, transposed: nn.Linear [out, in] -> Conv1D [in, out],
    #                          a bias: absent when bias=False, then zeros)
    ("ln_1.weight", False, False),
    ("ln_1.bias", False, True),
    ("attn.c_attn.weight", True, False),
    ("attn.c_attn.bias", False, True),
    ("attn.c_proj.weight", True, False),
    ("attn.c_proj.bias", False, True),
    ("ln_2.weight", False, False),
    ("ln_2.bias", False, True),
    ("mlp.c_fc.weight", True, False),
    ("mlp.c_fc.bias", False, True),
    ("mlp.c_proj.weight", True, False),
    ("mlp.c_proj.bias", False, True),
)
_NANOGPT_GLOBAL_TENSORS = (  # (nanoGPT name, GPT-2 name, a bias)
    ("transformer.wte.weight", "wte.weight", False),
    ("transformer.wpe.weight", "wpe.weight", False),
    ("transformer.ln_f.weight", "ln_f.weight", False),
    ("transformer.ln_f.bias", "ln_f.bias", True),
    ("lm_head.weight", "lm_head.weight", False),
)
# The TinyLM tensors a bias-free nanoGPT has no counterpart for (the LayerNorm biases stay, as zeros).
_TINYLM_LINEAR_BIASES = ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                         "self_attn.o_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias")


def nanogpt_tensor_table(n_layer: int, bias: bool) -> list[tuple[str, str, bool]]:
    """(nanoGPT name, GPT-2 name, transposed) for every tensor of a nanoGPT model."""
    table = [(nano, gpt2, False) for nano, gpt2, is_bias in _NANOGPT_GLOBAL_TENSORS if bias or not is_bias]
    for i in range(n_layer):
        table += [(f"transformer.h.{i}.{suffix}", f"h.{i}.{suffix}", transposed)
                  for suffix, transposed, is_bias in _NANOGPT_LAYER_TENSORS if bias or not is_bias]  # fmt: skip
    return table


def gpt2_config_from_nanogpt(args: dict) -> GPT2Config:
    """nanoGPT's `model_args` as the GPT2Config of the same model (exact GELU, eps 1e-5, tied head)."""
    eot = GPT2_VOCAB - 1 if args["vocab_size"] >= GPT2_VOCAB else None
    dropout = float(args.get("dropout", 0.0))
    return GPT2Config(
        vocab_size=args["vocab_size"],
        n_positions=args["block_size"],
        n_embd=args["n_embd"],
        n_layer=args["n_layer"],
        n_head=args["n_head"],
        activation_function="gelu",
        layer_norm_epsilon=1e-5,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        resid_pdrop=dropout,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
    )


def nanogpt_to_gpt2_state_dict(model: dict, gpt2: GPT2Config, bias: bool) -> dict[str, torch.Tensor]:
    """A nanoGPT `model` state dict (any prefix) checked and in GPT-2's layout, zeros for the biases it lacks."""
    state = {name.removeprefix(_COMPILED_PREFIX): tensor for name, tensor in model.items()}
    state = {name: tensor for name, tensor in state.items() if not name.endswith(_MASK_BUFFER_SUFFIX)}
    table = nanogpt_tensor_table(gpt2.n_layer, bias)
    shapes = gpt2_expected_shapes(gpt2)
    expected = {nano: shapes[name][::-1] if transposed else shapes[name] for nano, name, transposed in table}
    hint = f"model_args (n_embd={gpt2.n_embd}, vocab_size={gpt2.vocab_size}, block_size={gpt2.n_positions})"
    check_tensors(state, expected, what="nanoGPT", tied=True, ties={"lm_head.weight": "transformer.wte.weight"},
                  config_hint=hint)  # fmt: skip
    gpt2_state = {name: state[nano].t().contiguous() if transposed else state[nano] for nano, name, transposed in table
                  if nano in state}  # fmt: skip
    dtype = gpt2_state["wte.weight"].dtype
    for name, shape in shapes.items():
        gpt2_state.setdefault(name, torch.zeros(shape, dtype=dtype))  # the biases of a bias=False model
    return gpt2_state


class NanoGPTFormat(Format):
    name = "nanogpt"
    label = "nanoGPT"
    signature = "nanoGPT's ckpt.pt (the file, or the out_dir folder holding it)"

    def detect(self, path: Path) -> bool:
        if path.is_dir():
            return (path / CHECKPOINT_FILE).is_file() and not (path / "config.json").exists()
        return path.suffix == ".pt"

    def read(self, path: Path, repo_id: str | None, progress: bool) -> Checkpoint:
        file = path / CHECKPOINT_FILE if path.is_dir() else path
        saved = _load(file)
        args = saved["model_args"]
        missing = unset_fields(args, MODEL_ARGS)
        if missing:
            raise ConversionError(f"The `model_args` of {file} lack {', '.join(missing)}, which fix the model's shape.")
        gpt2 = gpt2_config_from_nanogpt(args)
        bias = bool(args["bias"])
        notes = [
            "nanoGPT checkpoints carry no tokenizer, so the output has none. A model on GPT-2's vocabulary "
            "(nanoGPT's default, tiktoken's `gpt2` encoding) uses the GPT-2 tokenizer: add it with "
            "`AutoTokenizer.from_pretrained('openai-community/gpt2').save_pretrained(OUTPUT)`. A character-level "
            "`meta.pkl` vocabulary is a pickle and is not read."
        ]
        if "iter_num" in saved:
            loss = saved.get("best_val_loss")
            loss_text = f", best validation loss {float(loss):.4f}" if loss is not None else ""
            notes.append(f"The checkpoint was saved at training iteration {saved['iter_num']}{loss_text}.")
        checkpoint = gpt2_checkpoint(
            gpt2,
            nanogpt_to_gpt2_state_dict(saved["model"], gpt2, bias),
            format=self.name,
            name=repo_id or path.name,
            description=f"the nanoGPT checkpoint `{file.name}`" + (f" of `{path.name}`" if path.is_dir() else ""),
            repo_id=repo_id,
        )
        config, tensors, count = checkpoint.config, checkpoint.tensors, checkpoint.num_tensors
        if not bias:
            config = config.with_overrides(attention_bias=False, mlp_bias=False)
            tensors = _without_linear_biases(tensors)
            count -= len(_TINYLM_LINEAR_BIASES) * config.num_hidden_layers
            notes.append(
                "The checkpoint has `bias=False`: the output's linear layers have no biases, and its LayerNorm biases "
                "(which TinyLM's LayerNorm always has) are zeros, which is exact."
            )
        if config.vocab_size == PADDED_GPT2_VOCAB:
            config = config.with_overrides(vocab_size=GPT2_VOCAB)
            tensors = _vocabulary_cut(tensors, GPT2_VOCAB)
            notes.append(
                f"nanoGPT pads GPT-2's {GPT2_VOCAB:,}-token vocabulary to {PADDED_GPT2_VOCAB:,} rows for speed; no "
                f"token maps to the {PADDED_GPT2_VOCAB - GPT2_VOCAB} padding rows, so they were cut: the output's "
                f"vocabulary is the tokenizer's {GPT2_VOCAB:,} tokens, their logits unchanged (parity is measured on "
                "them)."
            )
        return dataclasses.replace(
            checkpoint,
            config=config,
            tensors=tensors,
            num_tensors=count,
            reference_name=(
                "Transformers' `GPT2LMHeadModel` holding the nanoGPT weights (nanoGPT's model is GPT-2's architecture "
                "with exact GELU" + ("" if bias else " and zero biases") + ")"
            ),
            notes=notes + checkpoint.notes,
        )


def _load(file: Path) -> dict:
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConversionError(
            f"Refusing to load {file}: it holds objects other than tensors and plain values, and only "
            "`weights_only=True` loading is allowed (plain pickle can run arbitrary code)."
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise ConversionError(f"Cannot read {file}: {error} (truncated or corrupt file?)") from None
    if not (isinstance(saved, dict) and all(isinstance(saved.get(key), dict) for key in ("model", "model_args"))):
        found = f"a dict with keys {', '.join(map(str, saved))}" if isinstance(saved, dict) else type(saved).__name__
        raise ConversionError(
            f"{file} is not a nanoGPT checkpoint: nanoGPT's train.py saves a dict with `model` and `model_args`, "
            f"this holds {found}."
        )
    return saved


def _without_linear_biases(tensors):
    def stream():
        for name, tensor in tensors():
            if not name.endswith(_TINYLM_LINEAR_BIASES):
                yield name, tensor

    return stream


def _vocabulary_cut(tensors, vocab_size: int):
    def stream():
        for name, tensor in tensors():
            yield name, tensor[:vocab_size] if name in ("model.embed_tokens.weight", "lm_head.weight") else tensor

    return stream


FORMAT = NanoGPTFormat()
