"""Transformers Llama (`LlamaForCausalLM` folders, model_type "llama") <-> Llama-style TinyLM (rotary positions,
RMSNorm, gated MLP, pre-norm): the config and weight maps both ways, what Llama cannot express, reader and writer.

Both sides use `nn.Linear` with the same q, k and v projections, so every tensor is copied under another name (none
is transposed, split or joined), which is why a round trip is bit-exact. Every `LlamaConfig` option that changes the
math is carried over: sizes (`head_dim` included), every RoPE type of `rope_parameters`, `rms_norm_eps`,
`hidden_act`, `attention_bias`, `mlp_bias`, tying. `pretraining_tp` is not used by Transformers' Llama forward and is
ignored here too.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.activations import ACT2FN

from ...configuration_tinylm import TinyLMConfig
from ...model_folder import load_weights, read_json
from ..base import (
    Checkpoint,
    ConversionError,
    Tensors,
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

LLAMA_SIZE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

_LLAMA_GLOBAL_TENSORS = (  # (Llama name, TinyLM name): the same tensor, copied
    ("model.embed_tokens.weight", "model.embed_tokens.weight"),
    ("model.norm.weight", "model.norm.weight"),
)
_LLAMA_LAYER_TENSORS = (  # (Llama suffix, TinyLM suffix, the config flag the tensor exists under, or None): copied
    ("input_layernorm.weight", "attn_norm.weight", None),
    ("self_attn.q_proj.weight", "self_attn.q_proj.weight", None),
    ("self_attn.q_proj.bias", "self_attn.q_proj.bias", "attention_bias"),
    ("self_attn.k_proj.weight", "self_attn.k_proj.weight", None),
    ("self_attn.k_proj.bias", "self_attn.k_proj.bias", "attention_bias"),
    ("self_attn.v_proj.weight", "self_attn.v_proj.weight", None),
    ("self_attn.v_proj.bias", "self_attn.v_proj.bias", "attention_bias"),
    ("self_attn.o_proj.weight", "self_attn.o_proj.weight", None),
    ("self_attn.o_proj.bias", "self_attn.o_proj.bias", "attention_bias"),
    ("post_attention_layernorm.weight", "mlp_norm.weight", None),
    ("mlp.gate_proj.weight", "mlp.gate_proj.weight", None),
    ("mlp.gate_proj.bias", "mlp.gate_proj.bias", "mlp_bias"),
    ("mlp.up_proj.weight", "mlp.up_proj.weight", None),
    ("mlp.up_proj.bias", "mlp.up_proj.bias", "mlp_bias"),
    ("mlp.down_proj.weight", "mlp.down_proj.weight", None),
    ("mlp.down_proj.bias", "mlp.down_proj.bias", "mlp_bias"),
)


# ----------------------------------------------------------------------------------------------- configs


def tinylm_config_from_llama(llama: LlamaConfig) -> TinyLMConfig:
    """The TinyLM config computing exactly what `llama` computes; refuses any option it cannot honour."""
    if llama.hidden_act not in ACT2FN:
        raise ConversionError(
            f"LlamaConfig option `hidden_act={llama.hidden_act!r}` is not a Transformers activation (ACT2FN)."
        )
    try:
        return TinyLMConfig(
            vocab_size=llama.vocab_size,
            hidden_size=llama.hidden_size,
            num_hidden_layers=llama.num_hidden_layers,
            num_attention_heads=llama.num_attention_heads,
            num_key_value_heads=llama.num_key_value_heads,
            head_dim=llama.head_dim,
            intermediate_size=llama.intermediate_size,
            max_position_embeddings=llama.max_position_embeddings,
            position_embedding_type="rotary",
            rope_parameters=dict(llama.rope_parameters),
            norm_type="rmsnorm",
            norm_eps=llama.rms_norm_eps,
            norm_position="pre",
            mlp_type="glu",
            hidden_act=llama.hidden_act,
            attention_bias=llama.attention_bias,
            mlp_bias=llama.mlp_bias,
            tie_word_embeddings=llama.tie_word_embeddings,
            attention_dropout=float(llama.attention_dropout or 0.0),
            initializer_range=llama.initializer_range,
            bos_token_id=llama.bos_token_id,
            eos_token_id=llama.eos_token_id,
            pad_token_id=llama.pad_token_id,
        )
    except ValueError as error:  # e.g. RoPE parameters TinyLM's validation refuses; the message names the field
        raise ConversionError(f"This LlamaConfig cannot be converted: {error}") from None


def llama_incompatibilities(config: TinyLMConfig) -> list[str]:
    """Each TinyLM setting Llama cannot represent, as `field=value (Llama needs ...)`; empty if compatible."""
    required = (
        ("position_embedding_type", "rotary"),
        ("norm_type", "rmsnorm"),
        ("norm_position", "pre"),
        ("mlp_type", "glu"),
        ("scale_attn_by_inverse_layer_idx", False),
        ("sliding_window", None),
        ("embedding_dropout", 0.0),
        ("residual_dropout", 0.0),
    )
    problems = mismatches(config, required, "Llama")
    if config.attention_scale not in (None, config.head_dim**-0.5):
        problems.append(f"attention_scale={config.attention_scale!r} (Llama scales by head_dim ** -0.5)")
    if config.hidden_size % config.num_attention_heads:
        problems.append(
            f"hidden_size={config.hidden_size} with num_attention_heads={config.num_attention_heads} (Llama needs "
            "the hidden size to be a multiple of the head count)"
        )
    return problems


def llama_config_from_tinylm(config: TinyLMConfig) -> LlamaConfig:
    """The `LlamaConfig` computing exactly what `config` computes; refuses a config Llama cannot represent."""
    refuse_unless_expressible(FORMAT, config)
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        rms_norm_eps=config.norm_eps,
        rope_parameters=dict(config.rope_parameters),
        attention_bias=config.attention_bias,
        attention_dropout=config.attention_dropout,
        mlp_bias=config.mlp_bias,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


# ----------------------------------------------------------------------------------------------- weights


def _present(flag: str | None, config) -> bool:
    return flag is None or getattr(config, flag)


def check_llama_state_dict(state_dict: Mapping[str, torch.Tensor], llama: LlamaConfig) -> None:
    """Refuse a Llama state dict that misses, misshapes or adds a tensor of `LlamaForCausalLM(llama)`, naming each."""
    with torch.device("meta"):
        expected = {name: tensor.shape for name, tensor in LlamaForCausalLM(llama).state_dict().items()}
    check_tensors(state_dict, expected, what="Llama", tied=llama.tie_word_embeddings,
                  ties=LlamaForCausalLM._tied_weights_keys)  # fmt: skip


def llama_to_tinylm_tensors(state_dict: Mapping[str, torch.Tensor], config: TinyLMConfig) -> Tensors:
    """Yield (TinyLM name, tensor) for a checked Llama state dict; the head only when untied."""
    for llama_name, tinylm_name in _LLAMA_GLOBAL_TENSORS:
        yield tinylm_name, state_dict[llama_name]
    for i in range(config.num_hidden_layers):
        llama, tinylm = f"model.layers.{i}.", f"model.layers.{i}."
        for llama_suffix, tinylm_suffix, flag in _LLAMA_LAYER_TENSORS:
            if _present(flag, config):
                yield tinylm + tinylm_suffix, state_dict[llama + llama_suffix]
    if not config.tie_word_embeddings:
        yield "lm_head.weight", state_dict["lm_head.weight"]


def tinylm_to_llama_tensors(state_dict: Mapping[str, torch.Tensor], config: TinyLMConfig) -> Tensors:
    """Yield (Llama name, tensor) for a Llama-compatible TinyLM state dict."""
    for llama_name, tinylm_name in _LLAMA_GLOBAL_TENSORS:
        yield llama_name, require_tensor(state_dict, tinylm_name, "TinyLM")
    for i in range(config.num_hidden_layers):
        llama, tinylm = f"model.layers.{i}.", f"model.layers.{i}."
        for llama_suffix, tinylm_suffix, flag in _LLAMA_LAYER_TENSORS:
            if _present(flag, config):
                yield llama + llama_suffix, require_tensor(state_dict, tinylm + tinylm_suffix, "TinyLM")
    if not config.tie_word_embeddings:
        yield "lm_head.weight", require_tensor(state_dict, "lm_head.weight", "TinyLM")


# ----------------------------------------------------------------------------------------------- the format


class LlamaFormat(TransformersFolder):
    name = "llama"
    label = "Llama"
    signature = 'a folder whose config.json has model_type "llama" (Transformers LlamaForCausalLM)'
    card_tags = ("llama", "tinylm")
    model_class = LlamaForCausalLM

    def detect(self, path: Path) -> bool:
        return config_model_type(path) == "llama"

    def read(self, path: Path, repo_id: str | None, progress: bool) -> Checkpoint:
        values = read_json(path / "config.json")
        require_size_fields(values, LLAMA_SIZE_FIELDS, path / "config.json")
        llama = LlamaConfig.from_dict(values)
        config = tinylm_config_from_llama(llama)
        state_dict = {name: tensor for name, tensor in load_weights(path, progress=progress).items()
                      if not name.endswith(".rotary_emb.inv_freq")}  # fmt: skip
        check_llama_state_dict(state_dict, llama)
        name = repo_id or path.name

        def reference():
            return logits_of(build_model(LlamaForCausalLM, llama, {k: v.float() for k, v in state_dict.items()}))

        return Checkpoint(
            format=self.name,
            name=name,
            description=f"the Transformers Llama checkpoint `{name}`" + hub_suffix(repo_id),
            config=config,
            tensors=lambda: llama_to_tinylm_tensors(state_dict, config),
            num_tensors=len(state_dict) - ("lm_head.weight" in state_dict and config.tie_word_embeddings)
            - 2 * config.num_hidden_layers * (1 + config.attention_bias),
            dtype=state_dict["model.embed_tokens.weight"].dtype,
            reference=reference,
            reference_name="Transformers' `LlamaForCausalLM` holding the source weights",
            tokenizer=load_tokenizer(path),
            generation_config=load_generation_config(path),
            repo_id=repo_id,
            license=source_license(path),
        )

    def refusals(self, config: TinyLMConfig) -> list[str]:
        return llama_incompatibilities(config)

    def config_from_tinylm(self, config: TinyLMConfig) -> LlamaConfig:
        return llama_config_from_tinylm(config)

    def tensors_from_tinylm(self, state_dict, config) -> Iterator[tuple[str, torch.Tensor]]:
        return tinylm_to_llama_tensors(state_dict, config)


FORMAT = LlamaFormat()
