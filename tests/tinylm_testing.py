"""Tiny TinyLM configurations shared by the tests, and the pairwise table of architecture variants."""

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM

VOCAB = 64

# Every value of every variant factor, and every pair of values of two factors, appears in at least one row
# (checked by test_variant_table_covers_every_pair_of_choices).
VARIANT_FACTORS = {
    "position_embedding_type": ["learned", "sinusoidal", "rotary", "alibi"],
    "attention": ["mha", "gqa", "mqa"],
    "norm_type": ["layernorm", "rmsnorm"],
    "norm_position": ["pre", "post"],
    "mlp_type": ["mlp", "glu"],
    "sliding_window": [None, 4],
    "tie_word_embeddings": [True, False],
}
VARIANTS = [
    ("learned", "mha", "rmsnorm", "post", "glu", 4, True),
    ("learned", "gqa", "rmsnorm", "pre", "glu", None, False),
    ("learned", "mqa", "layernorm", "pre", "mlp", None, True),
    ("sinusoidal", "mha", "layernorm", "pre", "glu", None, False),
    ("sinusoidal", "gqa", "rmsnorm", "post", "mlp", 4, True),
    ("sinusoidal", "mqa", "rmsnorm", "post", "glu", 4, False),
    ("rotary", "mha", "rmsnorm", "pre", "mlp", 4, False),
    ("rotary", "gqa", "layernorm", "pre", "glu", 4, True),
    ("rotary", "mqa", "layernorm", "post", "mlp", None, True),
    ("alibi", "mha", "layernorm", "pre", "glu", 4, False),
    ("alibi", "gqa", "layernorm", "pre", "mlp", 4, False),
    ("alibi", "mqa", "rmsnorm", "post", "mlp", None, True),
]
KV_HEADS = {"mha": 4, "gqa": 2, "mqa": 1}


def variant_id(row: tuple) -> str:
    return "-".join(str(value) for value in row).replace("None", "full")


def variant_config(row: tuple, **overrides) -> TinyLMConfig:
    settings = dict(zip(VARIANT_FACTORS, row))
    attention = settings.pop("attention")
    hidden_act = "silu" if settings["mlp_type"] == "glu" else "gelu_new"
    return tiny_config(num_key_value_heads=KV_HEADS[attention], hidden_act=hidden_act, **settings, **overrides)


def tiny_config(**overrides) -> TinyLMConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_attention_heads=4,
        num_hidden_layers=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return TinyLMConfig(**{**fields, **overrides})


def build(config: TinyLMConfig, seed: int = 0) -> TinyLMForCausalLM:
    """A model in eval mode whose norms are randomised too, so that a mistake anywhere moves the logits."""
    torch.manual_seed(seed)
    model = TinyLMForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def all_pairs(rows, factors) -> set:
    names = list(factors)
    return {
        (a, row[i], b, row[j]) for row in rows for (i, a), (j, b) in itertools.combinations(enumerate(names), 2)
    }


def generate_with_logits(model, prompt: torch.Tensor, seed: int = 0, **settings):
    """`generate` with the raw logits of every step, from a fixed seed (so sampling repeats across models)."""
    torch.manual_seed(seed)
    return model.generate(prompt, return_dict_in_generate=True, output_logits=True, **settings)


def step_logits(output) -> torch.Tensor:
    return torch.stack(output.logits, dim=1)  # (B, new tokens, V): the logits each decode step saw


def assert_same_logits(actual, expected, atol: float = 1e-5) -> None:
    """Two fp32 computations of the same logits (about 1e-6 apart when both are right)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


def assert_same_generation(actual, expected, atol: float = 1e-5) -> None:
    """Two generations agree token for token and, at every step, in fp32 logits within `atol`."""
    assert torch.equal(actual.sequences, expected.sequences)
    assert_same_logits(step_logits(actual), step_logits(expected), atol=atol)


def assert_not_degenerate(tokens: torch.Tensor, at_least: int) -> None:
    """Each row of generated `tokens` has `at_least` distinct tokens, so a comparison sees more than one token."""
    for row in tokens:
        assert len(set(row.tolist())) >= at_least, f"degenerate generation {row.tolist()}: pick another seed"


# Prepended to a script by `run_without_hf_tinylm`: importing hf_tinylm fails, as on a machine that only has a
# saved folder, so the folder's own code (`trust_remote_code=True`) is what runs.
_REFUSE_HF_TINYLM = """
import sys
sys.modules["hf_tinylm"] = None
try:
    import hf_tinylm
    sys.exit("hf_tinylm was importable: the test would prove nothing")
except ImportError:
    pass
"""


def run_without_hf_tinylm(script: str, *args, cwd) -> subprocess.CompletedProcess:
    """Run `script` (given `args` as sys.argv[1:]) in a fresh offline interpreter where hf_tinylm cannot be
    imported, with its own remote-code modules folder under `cwd`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(cwd) / "modules")}
    return subprocess.run(
        [sys.executable, "-c", _REFUSE_HF_TINYLM + textwrap.dedent(script), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )


def save_in_fused_qkv_layout(model: TinyLMForCausalLM, folder: Path) -> None:
    """Replace the weights of the folder `model` was saved to by the layout of TinyLM versions before separate q/k/v
    projections: one `self_attn.qkv_proj` per layer, rows [q; k; v] (written by hand from the state dict)."""
    state, fused = model.state_dict(), {}
    for name, tensor in state.items():
        if ".self_attn.q_proj." in name:
            parts = [state[name.replace("q_proj", part)] for part in ("q_proj", "k_proj", "v_proj")]
            fused[name.replace("q_proj", "qkv_proj")] = torch.cat(parts)
        elif ".self_attn.k_proj." not in name and ".self_attn.v_proj." not in name:
            fused[name] = tensor.clone()
    if model.config.tie_word_embeddings:
        del fused["lm_head.weight"]
    save_file(fused, Path(folder) / "model.safetensors", metadata={"format": "pt"})
