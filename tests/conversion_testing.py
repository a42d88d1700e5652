"""Helpers shared by the conversion tests (tests/test_conversion_*.py)."""

from pathlib import Path

import torch
from safetensors.torch import load_file


def randomise_wide(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Draw `model`'s weights wide (std 0.3; norm gains around 1), so that any mapping mistake or ignored option
    moves the logits by far more than a 1e-5 tolerance; in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_gain = ("norm" in name or "ln_" in name) and name.endswith("weight")
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if is_norm_gain else 0.3 * noise)
    return model.eval()


def tokens(vocab_size: int, shape=(3, 20), seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def max_logits_diff(a, b, input_ids) -> float:
    return (a(input_ids).logits - b(input_ids).logits).abs().max().item()


def assert_no_output(output: Path) -> None:
    assert not output.exists()
    assert not list(output.parent.glob(f".{output.name}.partial-*")), "a temporary folder was left behind"


def assert_same_weights(original: Path, back: Path, dtype: torch.dtype | None = None) -> None:
    """The `model.safetensors` of two folders hold the same tensor names and bits (all in `dtype`, if given)."""
    expected, got = load_file(original / "model.safetensors"), load_file(back / "model.safetensors")
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor) and (dtype is None or got[name].dtype == dtype), name
