"""GGUF, llama.cpp's one-file format: `tinylm convert SOURCE model.gguf --to gguf`; written only.

A Llama-style TinyLM (rotary positions) is written as architecture `llama`, a GPT-2-style one (learned positions)
as `gpt2`, with llama.cpp's tensor names and metadata keys (the tables below) through the `gguf` package. Layouts:
GGUF stores `nn.Linear` weights as [out, in], as TinyLM does, so nothing is transposed; for `llama`, the q and k rows
are permuted within each head from the half-split RoPE layout of Transformers to the interleaved pairs llama.cpp
rotates (`_interleave_rope_rows`); `gpt2` stores one fused `attn_qkv`, TinyLM's q, k and v projections joined along
the output axis. Norms and biases are stored in float32, as llama.cpp's converter does; 2-D weights in `--dtype`. The
tokenizer (byte-level BPE, GPT-2's kind) goes into the `tokenizer.ggml.*` metadata with its special tokens.

What each architecture cannot express is refused from the config: everything Llama or GPT-2 cannot, and what
GGUF metadata for them does not carry (RoPE scaling, biases and activations other than SiLU for `llama`; activations
other than `gelu_new` and attention scales other than head_dim ** -0.5 for `gpt2`).
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase

from ...configuration_tinylm import TinyLMConfig
from ..base import ConversionError, Format, Tensors, logits_of, mismatches, require_tensor
from .gpt2 import gpt2_incompatibilities
from .llama import llama_incompatibilities

_LLAMA_GLOBAL_TENSORS = (
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
)
_LLAMA_LAYER_TENSORS = (  # (TinyLM suffix, GGUF suffix); q and k are permuted, see below
    ("attn_norm.weight", "attn_norm.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp_norm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
)
_LLAMA_QKV = (  # (TinyLM suffix, GGUF suffix, the config field counting its heads when its rows are permuted)
    ("self_attn.q_proj.weight", "attn_q.weight", "num_attention_heads"),
    ("self_attn.k_proj.weight", "attn_k.weight", "num_key_value_heads"),
    ("self_attn.v_proj.weight", "attn_v.weight", None),
)
_GPT2_GLOBAL_TENSORS = (
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.embed_positions.weight", "position_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("model.norm.bias", "output_norm.bias"),
)
_GPT2_LAYER_TENSORS = (  # (TinyLM suffix, or the suffixes joined along the output axis; GGUF suffix), both [out, in]
    ("attn_norm.weight", "attn_norm.weight"),
    ("attn_norm.bias", "attn_norm.bias"),
    (("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "attn_qkv.weight"),
    (("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "attn_qkv.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("mlp_norm.weight", "ffn_norm.weight"),
    ("mlp_norm.bias", "ffn_norm.bias"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.up_proj.bias", "ffn_up.bias"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("mlp.down_proj.bias", "ffn_down.bias"),
)
_HEAD = ("lm_head.weight", "output.weight")  # written only when untied
# llama.cpp's `general.file_type` for each --dtype, and the tensor type of the 2-D weights.
_FILE_TYPES = {"float32": (0, "F32"), "float16": (1, "F16"), "bfloat16": (32, "BF16")}
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5


# ----------------------------------------------------------------------------------------------- architectures


def _llama_refusals(config: TinyLMConfig) -> list[str]:
    problems = llama_incompatibilities(config)
    rope_type = (config.rope_parameters or {}).get("rope_type", "default")
    if rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (GGUF llama as Transformers reads it carries rope_theta only)")
    return problems + mismatches(
        config, (("attention_bias", False), ("mlp_bias", False), ("hidden_act", "silu")), "GGUF llama"
    )


def _gpt2_refusals(config: TinyLMConfig) -> list[str]:
    problems = gpt2_incompatibilities(config) + mismatches(
        config,
        (("hidden_act", "gelu_new"), ("attention_scale", None), ("scale_attn_by_inverse_layer_idx", False)),
        "GGUF gpt2",
    )  # fmt: skip
    return problems


def _llama_metadata(config: TinyLMConfig) -> dict:
    return {
        "llama.vocab_size": config.vocab_size,
        "llama.context_length": config.max_position_embeddings,
        "llama.embedding_length": config.hidden_size,
        "llama.block_count": config.num_hidden_layers,
        "llama.feed_forward_length": config.intermediate_size,
        "llama.attention.head_count": config.num_attention_heads,
        "llama.attention.head_count_kv": config.num_key_value_heads,
        "llama.attention.key_length": config.head_dim,
        "llama.attention.value_length": config.head_dim,
        "llama.rope.dimension_count": config.head_dim,
        "llama.rope.freq_base": float(config.rope_parameters["rope_theta"]),
        "llama.attention.layer_norm_rms_epsilon": float(config.norm_eps),
    }


def _gpt2_metadata(config: TinyLMConfig) -> dict:
    return {
        "gpt2.context_length": config.max_position_embeddings,
        "gpt2.embedding_length": config.hidden_size,
        "gpt2.block_count": config.num_hidden_layers,
        "gpt2.feed_forward_length": config.intermediate_size,
        "gpt2.attention.head_count": config.num_attention_heads,
        "gpt2.attention.layer_norm_epsilon": float(config.norm_eps),
    }


def _interleave_rope_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Within each head, rows (j, j + d/2), which Transformers' RoPE rotates together, become adjacent rows (2j, 2j+1),
    the pairs llama.cpp's RoPE rotates."""
    head_dim = weight.shape[0] // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(weight.shape)


def _llama_tensors(state_dict: Mapping[str, torch.Tensor], config: TinyLMConfig) -> Tensors:
    for tinylm_name, gguf_name in _LLAMA_GLOBAL_TENSORS:
        yield gguf_name, require_tensor(state_dict, tinylm_name, "TinyLM")
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        for tinylm_suffix, gguf_suffix, heads_field in _LLAMA_QKV:
            weight = require_tensor(state_dict, layer + tinylm_suffix, "TinyLM")
            if heads_field is not None:
                weight = _interleave_rope_rows(weight, getattr(config, heads_field))
            yield f"blk.{i}.{gguf_suffix}", weight
        for tinylm_suffix, gguf_suffix in _LLAMA_LAYER_TENSORS:
            yield f"blk.{i}.{gguf_suffix}", require_tensor(state_dict, layer + tinylm_suffix, "TinyLM")
    if not config.tie_word_embeddings:
        yield _HEAD[1], require_tensor(state_dict, _HEAD[0], "TinyLM")


def _gpt2_tensors(state_dict: Mapping[str, torch.Tensor], config: TinyLMConfig) -> Tensors:
    for tinylm_name, gguf_name in _GPT2_GLOBAL_TENSORS:
        yield gguf_name, require_tensor(state_dict, tinylm_name, "TinyLM")
    for i in range(config.num_hidden_layers):
        for tinylm_suffix, gguf_suffix in _GPT2_LAYER_TENSORS:
            names = tinylm_suffix if isinstance(tinylm_suffix, tuple) else (tinylm_suffix,)
            parts = [require_tensor(state_dict, f"model.layers.{i}.{name}", "TinyLM") for name in names]
            yield f"blk.{i}.{gguf_suffix}", torch.cat(parts) if len(parts) > 1 else parts[0]  # q, k, v: rows [q; k; v]
    if not config.tie_word_embeddings:
        yield _HEAD[1], require_tensor(state_dict, _HEAD[0], "TinyLM")


@dataclass(frozen=True)
class _Architecture:
    name: str  # general.architecture
    refusals: Callable[[TinyLMConfig], list[str]]
    metadata: Callable[[TinyLMConfig], dict]
    tensors: Callable[[Mapping[str, torch.Tensor], TinyLMConfig], Tensors]


_LLAMA = _Architecture("llama", _llama_refusals, _llama_metadata, _llama_tensors)
_GPT2 = _Architecture("gpt2", _gpt2_refusals, _gpt2_metadata, _gpt2_tensors)


def _architecture(config: TinyLMConfig) -> _Architecture:
    """`gpt2` for a model with a position table, `llama` otherwise (its refusals say why a config fits neither)."""
    return _GPT2 if config.has_absolute_positions else _LLAMA


# ----------------------------------------------------------------------------------------------- tokenizer


def tokenizer_metadata(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> dict:
    """The `tokenizer.ggml.*` metadata of a byte-level BPE tokenizer, its vocabulary padded to `vocab_size`."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ConversionError(
            f"GGUF output writes byte-level BPE tokenizers (GPT-2's kind); this one is a {model['type']} tokenizer "
            f"without byte-level pre-tokenization. Convert to a Transformers folder instead (--to tinylm/llama)."
        )
    tokens, types = [None] * vocab_size, [_NORMAL] * vocab_size
    added = {token["id"]: token for token in spec.get("added_tokens", [])}
    for token, index in {**model["vocab"], **{token["content"]: index for index, token in added.items()}}.items():
        if index >= vocab_size:
            raise ConversionError(f"The tokenizer has token id {index}, beyond the model's vocab_size={vocab_size}.")
        tokens[index] = token
        if index in added:
            types[index] = _CONTROL if added[index]["special"] else _USER_DEFINED
    for index in range(vocab_size):
        if tokens[index] is None:
            tokens[index], types[index] = f"[PAD{index}]", _UNUSED
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]],
        "tokenizer.ggml.add_bos_token": False,
    }
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("padding", tokenizer.pad_token_id)):  # fmt: skip
        if token_id is not None:
            metadata[f"tokenizer.ggml.{key}_token_id"] = token_id
    if getattr(tokenizer, "chat_template", None):
        metadata["tokenizer.chat_template"] = tokenizer.chat_template
    return metadata


# ----------------------------------------------------------------------------------------------- the format


class GGUFFormat(Format):
    name = "gguf"
    label = "GGUF"
    output_is_file = True

    def refusals(self, config: TinyLMConfig) -> list[str]:
        return _architecture(config).refusals(config)

    def write(self, checkpoint, state_dict, output, dtype, max_shard_size) -> int:
        try:
            import gguf  # needed only here
        except ImportError as error:
            raise ConversionError(f"--to gguf needs the `gguf` package ({error}): `pip install gguf`.") from None
        if checkpoint.tokenizer is None:
            raise ConversionError(
                f"{checkpoint.name} has no tokenizer, and a GGUF file carries its own: add the tokenizer files "
                "(tokenizer.json, ...) to the source folder first."
            )
        config = checkpoint.config
        architecture = _architecture(config)
        file_type, weight_type = _FILE_TYPES[dtype]
        metadata = {
            "general.name": checkpoint.name,
            "general.file_type": file_type,
            **architecture.metadata(config),
            **tokenizer_metadata(checkpoint.tokenizer, config.vocab_size),
        }
        writer = gguf.GGUFWriter(output, architecture.name)
        for key, value in metadata.items():
            _add_metadata(writer, key, value)
        for name, tensor in architecture.tensors(state_dict, config):
            array, tensor_type = _array(tensor, weight_type if tensor.dim() > 1 else "F32")
            writer.add_tensor(name, array, raw_dtype=getattr(gguf.GGMLQuantizationType, tensor_type))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return sum(tensor.numel() for tensor in state_dict.values())

    def reload(self, output: Path, dtype: str):
        """Transformers' own GGUF reader, in float32. Its `gpt2` metadata map sends `context_length` and
        `feed_forward_length` to names `GPT2Config` no longer reads (`n_ctx`, `feed_forward_length`): those two are
        passed on to `n_positions` and `n_inner`; everything else is read by Transformers alone."""
        config = AutoConfig.from_pretrained(output.parent, gguf_file=output.name)
        if config.model_type == "gpt2":
            config.n_positions, config.n_inner = config.n_ctx, config.feed_forward_length
        model = AutoModelForCausalLM.from_pretrained(output.parent, gguf_file=output.name, config=config,
                                                     dtype=torch.float32)  # fmt: skip
        return logits_of(model.eval())


def _add_metadata(writer, key: str, value) -> None:
    """One metadata entry, typed as llama.cpp reads it: booleans, uint32 counts and ids, float32 values, strings and
    arrays."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, value)


def _array(tensor: torch.Tensor, tensor_type: str) -> tuple[np.ndarray, str]:
    """`tensor` as the numpy array GGUF stores for `tensor_type` (bfloat16 as its raw 16 bits)."""
    if tensor_type == "BF16":
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16), tensor_type
    return tensor.to(torch.float16 if tensor_type == "F16" else torch.float32).contiguous().numpy(), tensor_type


FORMAT = GGUFFormat()
