"""GPT-2 <-> TinyLM: configs and weight names, both ways, as pure functions (no files, no models).

GPT-2 state dicts here use Transformers' `GPT2LMHeadModel` names without the `transformer.` prefix
(`wte.weight`, `h.0.attn.c_attn.weight`, ..., `ln_f.bias`, optionally `lm_head.weight`); `normalize_gpt2_state_dict`
brings any saved layout to that form. GPT-2's `Conv1D` stores `weight` as [in, out] and computes `x @ W + b`, so a
TinyLM `nn.Linear` holds its transpose; every other tensor is copied as is, which is why a round trip is bit-exact.
"""

from collections.abc import Iterator, Mapping

import torch
from transformers import GPT2Config
from transformers.activations import ACT2FN

from ..configuration_tinylm import TinyLMConfig
from ..model_folder import name_list

# Buffers of older GPT-2 code (the causal mask and its fill value): not weights, rebuilt by every implementation.
LEGACY_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

# Why `reorder_and_upcast_attn` is accepted: it changes no math, only fp16 rounding in GPT-2's eager kernel.
REORDER_AND_UPCAST_NOTE = (
    "The source sets `reorder_and_upcast_attn=True`. In GPT-2 it only changes how the *eager* attention kernel "
    "rounds in half precision (q·k computed in float32 with the scale folded in); the mathematics is unchanged and "
    "GPT-2 itself ignores it under the default SDPA kernel. TinyLM computes the attention softmax in float32, so "
    "the option is honoured as equivalent; fp32 logits are unaffected."
)

_GPT2_LAYER_TENSORS = (  # (GPT-2 suffix, TinyLM suffix, is a Conv1D weight)
    ("ln_1.weight", "attn_norm.weight", False),
    ("ln_1.bias", "attn_norm.bias", False),
    ("attn.c_attn.weight", "self_attn.qkv_proj.weight", True),
    ("attn.c_attn.bias", "self_attn.qkv_proj.bias", False),
    ("attn.c_proj.weight", "self_attn.o_proj.weight", True),
    ("attn.c_proj.bias", "self_attn.o_proj.bias", False),
    ("ln_2.weight", "mlp_norm.weight", False),
    ("ln_2.bias", "mlp_norm.bias", False),
    ("mlp.c_fc.weight", "mlp.up_proj.weight", True),
    ("mlp.c_fc.bias", "mlp.up_proj.bias", False),
    ("mlp.c_proj.weight", "mlp.down_proj.weight", True),
    ("mlp.c_proj.bias", "mlp.down_proj.bias", False),
)
_GPT2_GLOBAL_TENSORS = (
    ("wte.weight", "model.embed_tokens.weight"),
    ("wpe.weight", "model.embed_positions.weight"),
    ("ln_f.weight", "model.norm.weight"),
    ("ln_f.bias", "model.norm.bias"),
)


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted faithfully; the message names what and why."""


# ----------------------------------------------------------------------------------------------- configs


def tinylm_config_from_gpt2(gpt2: GPT2Config) -> TinyLMConfig:
    """The TinyLM config computing exactly what `gpt2` computes; refuses any option it cannot honour."""
    if gpt2.add_cross_attention:
        raise ConversionError(
            "GPT2Config option `add_cross_attention=True` (encoder-decoder cross-attention layers) is not supported: "
            "TinyLM is a decoder-only model. Convert a checkpoint without cross-attention."
        )
    if gpt2.activation_function not in ACT2FN:
        raise ConversionError(
            f"GPT2Config option `activation_function={gpt2.activation_function!r}` is not a Transformers activation "
            f"(ACT2FN); TinyLM supports: {', '.join(sorted(ACT2FN))}."
        )
    return TinyLMConfig(
        vocab_size=gpt2.vocab_size,
        hidden_size=gpt2.n_embd,
        num_hidden_layers=gpt2.n_layer,
        num_attention_heads=gpt2.n_head,
        intermediate_size=gpt2.n_inner if gpt2.n_inner is not None else 4 * gpt2.n_embd,
        max_position_embeddings=gpt2.n_positions,
        position_embedding_type="learned",
        norm_type="layernorm",
        norm_eps=gpt2.layer_norm_epsilon,
        norm_position="pre",
        mlp_type="mlp",
        hidden_act=gpt2.activation_function,
        attention_bias=True,
        mlp_bias=True,
        attention_scale=None if gpt2.scale_attn_weights else 1.0,
        scale_attn_by_inverse_layer_idx=gpt2.scale_attn_by_inverse_layer_idx,
        tie_word_embeddings=gpt2.tie_word_embeddings,
        embedding_dropout=gpt2.embd_pdrop,
        attention_dropout=gpt2.attn_pdrop,
        residual_dropout=gpt2.resid_pdrop,
        initializer_range=gpt2.initializer_range,
        bos_token_id=gpt2.bos_token_id,
        eos_token_id=gpt2.eos_token_id,
        pad_token_id=gpt2.pad_token_id,
    )


def gpt2_incompatibilities(config: TinyLMConfig) -> list[str]:
    """Each TinyLM setting GPT-2 cannot represent, as `field=value (GPT-2 needs ...)`; empty if compatible."""
    head_dim = config.hidden_size // config.num_attention_heads
    required = (
        ("position_embedding_type", "learned"),
        ("norm_type", "layernorm"),
        ("norm_position", "pre"),
        ("mlp_type", "mlp"),
        ("attention_bias", True),
        ("mlp_bias", True),
        ("num_key_value_heads", config.num_attention_heads),
        ("head_dim", head_dim),
        ("sliding_window", None),
    )
    problems = [
        f"{field}={getattr(config, field)!r} (GPT-2 needs {value!r})"
        for field, value in required
        if getattr(config, field) != value
    ]
    if config.attention_scale not in (None, 1.0, head_dim**-0.5):
        problems.append(
            f"attention_scale={config.attention_scale!r} (GPT-2 scales by head_dim ** -0.5 or not at all: "
            f"None, {head_dim**-0.5!r} or 1.0)"
        )
    return problems


def gpt2_config_from_tinylm(config: TinyLMConfig) -> GPT2Config:
    """The `GPT2Config` computing exactly what `config` computes; refuses a config GPT-2 cannot represent."""
    problems = gpt2_incompatibilities(config)
    if problems:
        raise ConversionError(
            "This TinyLM config cannot be expressed as GPT-2, which differs in: " + "; ".join(problems) + "."
        )
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_position_embeddings,
        n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        n_inner=None if config.intermediate_size == 4 * config.hidden_size else config.intermediate_size,
        activation_function=config.hidden_act,
        resid_pdrop=config.residual_dropout,
        embd_pdrop=config.embedding_dropout,
        attn_pdrop=config.attention_dropout,
        layer_norm_epsilon=config.norm_eps,
        initializer_range=config.initializer_range,
        scale_attn_weights=config.attention_scale != 1.0,
        scale_attn_by_inverse_layer_idx=config.scale_attn_by_inverse_layer_idx,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        architectures=["GPT2LMHeadModel"],
    )


# ----------------------------------------------------------------------------------------------- weights


def normalize_gpt2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any saved GPT-2 layout -> unprefixed names: drops the `transformer.` prefix and legacy mask buffers."""
    normalized = {}
    for name, tensor in state_dict.items():
        if name.endswith(LEGACY_BUFFER_SUFFIXES):
            continue
        key = name.removeprefix("transformer.")
        if key in normalized:
            raise ConversionError(f"The checkpoint holds {key!r} twice (with and without the `transformer.` prefix).")
        normalized[key] = tensor
    return normalized


def gpt2_expected_shapes(gpt2: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of a `GPT2LMHeadModel` with config `gpt2` (unprefixed), with its shape; `lm_head.weight`
    included, because an untied model must have one."""
    embd, inner = gpt2.n_embd, gpt2.n_inner if gpt2.n_inner is not None else 4 * gpt2.n_embd
    per_layer = {
        "ln_1.weight": (embd,), "ln_1.bias": (embd,),
        "attn.c_attn.weight": (embd, 3 * embd), "attn.c_attn.bias": (3 * embd,),
        "attn.c_proj.weight": (embd, embd), "attn.c_proj.bias": (embd,),
        "ln_2.weight": (embd,), "ln_2.bias": (embd,),
        "mlp.c_fc.weight": (embd, inner), "mlp.c_fc.bias": (inner,),
        "mlp.c_proj.weight": (inner, embd), "mlp.c_proj.bias": (embd,),
    }  # fmt: skip
    shapes = {"wte.weight": (gpt2.vocab_size, embd), "wpe.weight": (gpt2.n_positions, embd)}
    for i in range(gpt2.n_layer):
        shapes.update({f"h.{i}.{suffix}": shape for suffix, shape in per_layer.items()})
    shapes.update({"ln_f.weight": (embd,), "ln_f.bias": (embd,), "lm_head.weight": (gpt2.vocab_size, embd)})
    return shapes


def check_gpt2_state_dict(state_dict: Mapping[str, torch.Tensor], gpt2: GPT2Config) -> None:
    """Refuse a normalized GPT-2 state dict that misses, misshapes or adds a tensor, naming each one."""
    expected = gpt2_expected_shapes(gpt2)
    missing = [name for name in expected if name not in state_dict and name != "lm_head.weight"]
    if "lm_head.weight" not in state_dict and not gpt2.tie_word_embeddings:
        missing.append("lm_head.weight (required: the config has tie_word_embeddings=False)")
    if missing:
        raise ConversionError(f"The checkpoint is missing {len(missing)} GPT-2 tensor(s): {name_list(missing)}.")
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise ConversionError(
            f"The checkpoint has tensor(s) a GPT2LMHeadModel with this config does not: {name_list(unexpected)}. "
            "Is it a GPT-2 checkpoint with a matching config.json?"
        )
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point():
            raise ConversionError(f"Tensor {name!r} has dtype {tensor.dtype}; GPT-2 weights are floating point.")
        if tuple(tensor.shape) != expected[name]:
            raise ConversionError(
                f"Tensor {name!r} has shape {list(tensor.shape)}, but the config (n_embd={gpt2.n_embd}, "
                f"vocab_size={gpt2.vocab_size}, n_positions={gpt2.n_positions}) requires {list(expected[name])}."
            )
    head = state_dict.get("lm_head.weight")
    if gpt2.tie_word_embeddings and head is not None and not torch.equal(head, state_dict["wte.weight"]):
        raise ConversionError(
            "The config ties the output head to the embeddings (tie_word_embeddings=True), but the checkpoint's "
            "`lm_head.weight` differs from `wte.weight`. Set \"tie_word_embeddings\": false in config.json if the "
            "head is meant to be separate."
        )


def gpt2_to_tinylm_tensors(
    state_dict: Mapping[str, torch.Tensor], gpt2: GPT2Config
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (TinyLM name, tensor) for a checked, normalized GPT-2 state dict, one tensor at a time.

    A tied model yields `model.embed_tokens.weight` only (the head is tied on load, so a checkpoint without
    `lm_head.weight` needs none); an untied one also its own `lm_head.weight`.
    """
    for gpt2_name, tinylm_name in _GPT2_GLOBAL_TENSORS[:2]:
        yield tinylm_name, state_dict[gpt2_name]
    for i in range(gpt2.n_layer):
        for gpt2_suffix, tinylm_suffix, is_conv1d in _GPT2_LAYER_TENSORS:
            tensor = state_dict[f"h.{i}.{gpt2_suffix}"]
            yield f"model.layers.{i}.{tinylm_suffix}", tensor.t().contiguous() if is_conv1d else tensor
    for gpt2_name, tinylm_name in _GPT2_GLOBAL_TENSORS[2:]:
        yield tinylm_name, state_dict[gpt2_name]
    if not gpt2.tie_word_embeddings:
        yield "lm_head.weight", state_dict["lm_head.weight"]


def tinylm_to_gpt2_tensors(
    state_dict: Mapping[str, torch.Tensor], config: TinyLMConfig
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (GPT-2 name with the `transformer.` prefix, tensor) for a GPT-2-compatible TinyLM state dict."""
    for gpt2_name, tinylm_name in _GPT2_GLOBAL_TENSORS[:2]:
        yield f"transformer.{gpt2_name}", _require(state_dict, tinylm_name)
    for i in range(config.num_hidden_layers):
        for gpt2_suffix, tinylm_suffix, is_conv1d in _GPT2_LAYER_TENSORS:
            tensor = _require(state_dict, f"model.layers.{i}.{tinylm_suffix}")
            yield f"transformer.h.{i}.{gpt2_suffix}", tensor.t().contiguous() if is_conv1d else tensor
    for gpt2_name, tinylm_name in _GPT2_GLOBAL_TENSORS[2:]:
        yield f"transformer.{gpt2_name}", _require(state_dict, tinylm_name)
    if not config.tie_word_embeddings:
        yield "lm_head.weight", _require(state_dict, "lm_head.weight")


def _require(state_dict: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in state_dict:
        raise ConversionError(f"The TinyLM checkpoint has no tensor {name!r}.")
    return state_dict[name]


# ----------------------------------------------------------------------------------------------- OpenAI TF


def openai_tf_name_to_gpt2(name: str) -> str | None:
    """OpenAI's TF variable name -> the GPT-2 name (`model/h3/attn/c_attn/w` -> `h.3.attn.c_attn.weight`);
    None for a name outside the GPT-2 model (e.g. optimizer slots)."""
    parts = name.split("/")
    if parts[0] != "model" or len(parts) < 2:
        return None
    parts = parts[1:]
    if parts[0].startswith("h") and parts[0][1:].isdigit():
        parts = ["h", parts[0][1:], *parts[1:]]
    if len(parts) == 1:  # wte, wpe
        return f"{parts[0]}.weight"
    leaf = {"g": "weight", "w": "weight", "b": "bias"}.get(parts[-1])
    return None if leaf is None else ".".join([*parts[:-1], leaf])


def openai_tf_tensor_to_gpt2(gpt2_name: str, array: torch.Tensor) -> torch.Tensor:
    """OpenAI stores Conv1D weights as [1, in, out] (a 1x1 convolution kernel); GPT-2's Conv1D holds [in, out]."""
    if gpt2_name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
        if array.dim() != 3 or array.shape[0] != 1:
            raise ConversionError(
                f"OpenAI tensor for {gpt2_name!r} has shape {list(array.shape)}; expected [1, in, out]."
            )
        return array[0]
    return array
