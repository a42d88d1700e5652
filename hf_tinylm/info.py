"""`tinylm info`: the architecture of a TinyLM folder or preset on one screen, with parameter counts.

Counts come from the real model built on the meta device (no memory, any size), so they are exact for every
variant. Tied weights are counted once: a tied head shows 0 parameters, like GPT-2's parameter table.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .configuration_tinylm import PRESETS, TinyLMConfig
from .flags import option
from .model_folder import read_tinylm_config
from .modeling_tinylm import TinyLMForCausalLM


@dataclass
class InfoSettings:
    target: str | None = option(None, positional=True, nargs="?", metavar="MODEL_OR_PRESET",
                                help="model folder or preset name")
    json: bool = option(False, help="print the summary as JSON")


def resolve_config(target: str) -> tuple[TinyLMConfig, str]:
    """A model folder's config or a preset's, and how to name it."""
    if Path(target).exists():
        return read_tinylm_config(target), f"model folder {target}"
    if target in PRESETS:
        return TinyLMConfig.from_preset(target), f"preset {target}"
    raise ValueError(f"{target!r} is neither a model folder nor a preset. Presets: {', '.join(PRESETS)}.")


def _count(module: torch.nn.Module | None, seen: set[int]) -> int:
    """Parameters of `module` not already in `seen` (so a tensor shared by two modules counts once)."""
    if module is None:
        return 0
    total = 0
    for parameter in module.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def parameter_breakdown(config: TinyLMConfig) -> dict[str, int]:
    """Parameter counts by part: embeddings, one block (and its attention / MLP / norms), all blocks, final norm,
    head, total. The parts add up to the total."""
    with torch.device("meta"):
        model = TinyLMForCausalLM(config)
    seen: set[int] = set()
    base = model.model
    block = base.layers[0]
    counts = {
        "token_embeddings": _count(base.embed_tokens, seen),
        "position_embeddings": _count(base.embed_positions, seen),
    }
    block_seen: set[int] = set()
    counts["block_attention"] = _count(block.self_attn, block_seen)
    counts["block_mlp"] = _count(block.mlp, block_seen)
    counts["block_norms"] = _count(block.attn_norm, block_seen) + _count(block.mlp_norm, block_seen)
    counts["per_block"] = counts["block_attention"] + counts["block_mlp"] + counts["block_norms"] \
        + _count(block, block_seen)  # the whole block: its three parts plus anything else it holds
    counts["blocks"] = _count(base.layers, seen)
    counts["final_norm"] = _count(base.norm, seen)
    counts["head"] = _count(model.lm_head, seen)
    counts["other"] = _count(model, seen)  # anything not listed above; 0 for TinyLM today
    counts["total"] = sum(p.numel() for p in model.parameters())  # `parameters()` yields a shared tensor once
    return counts


def summary(config: TinyLMConfig) -> dict:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    attention = "multi-head" if kv_heads == heads else "multi-query" if kv_heads == 1 else "grouped-query"
    return {
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "attention": attention,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": config.head_dim,
        "attention_scale": config.attention_scale or config.head_dim**-0.5,
        "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
        "sliding_window": config.sliding_window,
        "attention_bias": config.attention_bias,
        "mlp_type": config.mlp_type,
        "hidden_act": config.hidden_act,
        "intermediate_size": config.intermediate_size,
        "mlp_bias": config.mlp_bias,
        "norm_type": config.norm_type,
        "norm_position": config.norm_position,
        "norm_eps": config.norm_eps,
        "position_embedding_type": config.position_embedding_type,
        "rope_parameters": config.rope_parameters,
        "max_position_embeddings": config.max_position_embeddings,
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_word_embeddings,
        "dropout": {"embedding": config.embedding_dropout, "attention": config.attention_dropout,
                    "residual": config.residual_dropout},
        "parameters": parameter_breakdown(config),
    }


def describe(target: str, as_json: bool = False) -> str:
    config, label = resolve_config(target)
    info = summary(config)
    if as_json:
        return json.dumps({"name": label, **info}, indent=2)
    p = info["parameters"]
    yes = {True: "yes", False: "no"}
    positions = info["position_embedding_type"]
    if info["rope_parameters"]:
        positions += f" ({info['rope_parameters'].get('rope_type')}, theta {info['rope_parameters'].get('rope_theta')})"
    window = f", sliding window {info['sliding_window']}" if info["sliding_window"] else ""
    drop = info["dropout"]
    lines = [
        f"TinyLM {label}",
        f"  layers x hidden   {info['layers']} x {info['hidden_size']}",
        f"  attention         {info['attention']}: {info['num_attention_heads']} query heads, "
        f"{info['num_key_value_heads']} key/value heads, head dim {info['head_dim']}, "
        f"scale {info['attention_scale']:.4g}{' / (layer+1)' if info['scale_attn_by_inverse_layer_idx'] else ''}, "
        f"bias {yes[info['attention_bias']]}{window}",
        f"  MLP               {info['mlp_type']}, {info['hidden_act']}, {info['intermediate_size']} wide, "
        f"bias {yes[info['mlp_bias']]}",
        f"  norm              {info['norm_type']} (eps {info['norm_eps']:g}), {info['norm_position']}-norm",
        f"  positions         {positions}, context {info['max_position_embeddings']:,}",
        f"  vocabulary        {info['vocab_size']:,} tokens, "
        f"{'tied' if info['tie_word_embeddings'] else 'separate'} input/output embeddings",
        f"  dropout           embedding {drop['embedding']:g}, attention {drop['attention']:g}, "
        f"residual {drop['residual']:g}",
        "",
        "Parameters (tied weights counted once)",
    ]
    total = p["total"]

    def row(name: str, count: int, note: str = "", indent: int = 2) -> str:
        share = f"{100 * count / total:5.1f}%" if total else ""
        return f"{' ' * indent}{name:<{26 - indent}}{count:>15,}  {share}{('  ' + note) if note else ''}"

    lines += [
        row("token embeddings", p["token_embeddings"]),
        row("position embeddings", p["position_embeddings"],
            "" if p["position_embeddings"] else f"({info['position_embedding_type']}: no weights)"),
        row("per block", p["per_block"]),
        row("attention", p["block_attention"], indent=4),
        row("MLP", p["block_mlp"], indent=4),
        row("norms", p["block_norms"], indent=4),
        row(f"{info['layers']} blocks", p["blocks"]),
        row("final norm", p["final_norm"]),
        row("head", p["head"], "(tied to token embeddings)" if info["tie_word_embeddings"] else ""),
    ]
    if p["other"]:
        lines.append(row("other", p["other"]))
    lines.append(f"  {'total':<24}{total:>15,}  ({_size(total * 4)} in fp32, {_size(total * 2)} in bf16)")
    return "\n".join(lines)


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    return ""


def list_presets(as_json: bool = False) -> str:
    rows = []
    for name in PRESETS:
        config = TinyLMConfig.from_preset(name)
        rows.append(dict(name=name, layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                         heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
                         positions=config.position_embedding_type, context=config.max_position_embeddings,
                         vocab_size=config.vocab_size, parameters=parameter_breakdown(config)["total"]))
    if as_json:
        return json.dumps(rows, indent=2)
    header = f"{'preset':<14}{'layers':>7}{'hidden':>8}{'heads':>7}{'kv':>4}  {'positions':<10}{'context':>8}" \
             f"{'vocab':>8}{'parameters':>15}"
    lines = [header] + [
        f"{r['name']:<14}{r['layers']:>7}{r['hidden_size']:>8}{r['heads']:>7}{r['kv_heads']:>4}  "
        f"{r['positions']:<10}{r['context']:>8}{r['vocab_size']:>8}{r['parameters']:>15,}"
        for r in rows
    ]
    lines.append("\n`tinylm info NAME` shows one preset in detail; `tinylm train --preset NAME` trains it.")
    return "\n".join(lines)
