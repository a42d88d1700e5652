"""Transformers GPT-2 (`GPT2LMHeadModel` / `GPT2Model` folders) <-> TinyLM: the config and weight maps both ways,
what GPT-2 cannot express, and the format's reader and writer.

GPT-2 state dicts here use Transformers' names without the `transformer.` prefix (`wte.weight`,
`h.0.attn.c_attn.weight`, ..., `ln_f.bias`, optionally `lm_head.weight`); `normalize_gpt2_state_dict` brings any saved
layout to that form. GPT-2's `Conv1D` stores `weight` as [in, out] and computes `x @ W + b`, so a TinyLM `nn.Linear`
holds its transpose; every other tensor is copied as is, which is why a round trip is bit-exact. OpenAI's TensorFlow
release and nanoGPT checkpoints are GPT-2 too: their modules read them into this layout and use `gpt2_checkpoint`.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN

from ...configuration_tinylm import TinyLMConfig
from ...model_folder import load_weights, read_json
from ..base import (
    Checkpoint,
    ConversionError,
    TransformersFolder,
    build_model,
    check_tensors,
    logits_of,
    mismatches,
    refuse_unless_expressible,
    require_tensor,
)
from ..sources import (
    config_model_type,
    hub_suffix,
    load_generation_config,
    load_tokenizer,
    require_size_fields,
    source_license,
)

# The config fields that fix the tensor shapes.
GPT2_SIZE_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
# Buffers of older GPT-2 code (the causal mask and its fill value): not weights, rebuilt by every implementation.
LEGACY_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

# Why `reorder_and_upcast_attn` is accepted: it changes no math, only fp16 rounding in GPT-2's eager kernel.
REORDER_AND_UPCAST_NOTE = (
    "The source sets `reorder_and_upcast_attn=True`. In GPT-2 it only changes how the *eager* attention kernel "
    "rounds in half precision (q·k computed in float32 with the scale folded in); the mathematics is unchanged and "
    "GPT-2 itself ignores it under the default SDPA kernel. TinyLM computes the attention softmax in float32, so "
    "the option is honoured as equivalent; fp32 logits are unaffected."
)

# (GPT-2 suffix, TinyLM suffix, is a Conv1D weight). GPT-2's fused `c_attn` holds q, k and v side by side on its
# last dim (a Conv1D weight [E, 3E], a bias [3E]): a tuple of three TinyLM suffixes splits it into thirds (each
# Conv1D third transposed) and joins them back.
_GPT2_LAYER_TENSORS = (
    ("ln_1.weight", "attn_norm.weight", False),
    ("ln_1.bias", "attn_norm.bias", False),
    ("attn.c_attn.weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), True),
    ("attn.c_attn.bias", ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), False),
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
    problems = mismatches(config, required, "GPT-2")
    if config.attention_scale not in (None, 1.0, head_dim**-0.5):
        problems.append(
            f"attention_scale={config.attention_scale!r} (GPT-2 scales by head_dim ** -0.5 or not at all: "
            f"None, {head_dim**-0.5!r} or 1.0)"
        )
    return problems


def gpt2_config_from_tinylm(config: TinyLMConfig) -> GPT2Config:
    """The `GPT2Config` computing exactly what `config` computes; refuses a config GPT-2 cannot represent."""
    refuse_unless_expressible(FORMAT, config)
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
    hint = f"the config (n_embd={gpt2.n_embd}, vocab_size={gpt2.vocab_size}, n_positions={gpt2.n_positions})"
    check_tensors(state_dict, gpt2_expected_shapes(gpt2), what="GPT-2", tied=gpt2.tie_word_embeddings,
                  ties={"lm_head.weight": "wte.weight"}, config_hint=hint)  # fmt: skip


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
            if isinstance(tinylm_suffix, tuple):  # c_attn: q, k, v side by side
                for suffix, part in zip(tinylm_suffix, tensor.chunk(3, dim=-1), strict=True):
                    yield f"model.layers.{i}.{suffix}", part.t().contiguous() if is_conv1d else part.contiguous()
            else:
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
        yield f"transformer.{gpt2_name}", require_tensor(state_dict, tinylm_name, "TinyLM")
    for i in range(config.num_hidden_layers):
        for gpt2_suffix, tinylm_suffix, is_conv1d in _GPT2_LAYER_TENSORS:
            if isinstance(tinylm_suffix, tuple):  # c_attn: q, k, v side by side
                parts = [require_tensor(state_dict, f"model.layers.{i}.{suffix}", "TinyLM") for suffix in tinylm_suffix]
                tensor = torch.cat([part.t() for part in parts] if is_conv1d else parts, dim=-1)
                yield f"transformer.h.{i}.{gpt2_suffix}", tensor.contiguous()
            else:
                tensor = require_tensor(state_dict, f"model.layers.{i}.{tinylm_suffix}", "TinyLM")
                yield f"transformer.h.{i}.{gpt2_suffix}", tensor.t().contiguous() if is_conv1d else tensor
    for gpt2_name, tinylm_name in _GPT2_GLOBAL_TENSORS[2:]:
        yield f"transformer.{gpt2_name}", require_tensor(state_dict, tinylm_name, "TinyLM")
    if not config.tie_word_embeddings:
        yield "lm_head.weight", require_tensor(state_dict, "lm_head.weight", "TinyLM")


# ----------------------------------------------------------------------------------------------- the format


def gpt2_checkpoint(gpt2: GPT2Config, state_dict: dict[str, torch.Tensor], **facts) -> Checkpoint:
    """A checked, normalized GPT-2 state dict as a `Checkpoint` whose reference is Transformers' `GPT2LMHeadModel`
    holding the same weights. `facts` are the other `Checkpoint` fields (format, name, description, ...)."""
    config = tinylm_config_from_gpt2(gpt2)
    notes = list(facts.pop("notes", []))
    if getattr(gpt2, "reorder_and_upcast_attn", False):
        notes.append(REORDER_AND_UPCAST_NOTE)

    def reference():
        weights = {
            name if name == "lm_head.weight" else f"transformer.{name}": tensor.float()
            for name, tensor in state_dict.items()
        }
        return logits_of(build_model(GPT2LMHeadModel, gpt2, weights))

    return Checkpoint(
        config=config,
        tensors=lambda: gpt2_to_tinylm_tensors(state_dict, gpt2),
        num_tensors=len(state_dict) - ("lm_head.weight" in state_dict and config.tie_word_embeddings),
        dtype=state_dict["wte.weight"].dtype,
        reference=reference,
        reference_name="Transformers' `GPT2LMHeadModel` holding the source weights",
        notes=notes,
        **facts,
    )


class GPT2Format(TransformersFolder):
    name = "gpt2"
    label = "GPT-2"
    signature = 'a folder whose config.json has model_type "gpt2" (Transformers GPT-2)'
    card_tags = ("gpt2", "tinylm")
    model_class = GPT2LMHeadModel

    def detect(self, path: Path) -> bool:
        return config_model_type(path) == "gpt2"

    def read(self, path: Path, repo_id: str | None, progress: bool) -> Checkpoint:
        values = read_json(path / "config.json")
        require_size_fields(values, GPT2_SIZE_FIELDS, path / "config.json", aliases=GPT2Config.attribute_map)
        gpt2 = GPT2Config.from_dict(values)
        state_dict = normalize_gpt2_state_dict(load_weights(path, progress=progress))
        check_gpt2_state_dict(state_dict, gpt2)
        notes = []
        if "GPT2Model" in (gpt2.architectures or []):
            notes.append(
                "The source is a `GPT2Model` save (no language-modelling head); the head is tied to the token "
                "embeddings, as in `GPT2LMHeadModel`."
            )
        tokenizer = load_tokenizer(path)
        if tokenizer is None:
            notes.append("The source has no tokenizer files; the output folder has none either.")
        name = repo_id or path.name
        return gpt2_checkpoint(
            gpt2,
            state_dict,
            format=self.name,
            name=name,
            description=f"the Transformers GPT-2 checkpoint `{name}`" + hub_suffix(repo_id),
            tokenizer=tokenizer,
            generation_config=load_generation_config(path),
            repo_id=repo_id,
            license=source_license(path),
            notes=notes,
        )

    def refusals(self, config: TinyLMConfig) -> list[str]:
        return gpt2_incompatibilities(config)

    def config_from_tinylm(self, config: TinyLMConfig) -> GPT2Config:
        return gpt2_config_from_tinylm(config)

    def tensors_from_tinylm(self, state_dict, config):
        return tinylm_to_gpt2_tensors(state_dict, config)


FORMAT = GPT2Format()
