"""Helpers shared by the CLI, training, generation and distributed tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

# A model small enough to train a few dozen steps in seconds on a CPU.
TINY_OVERRIDES = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,max_position_embeddings=64"
)
TINY_TRAIN_ARGS = [
    "--preset", "tiny", "--config-overrides", TINY_OVERRIDES, "--block-size", "32", "--batch-size", "4",
    "--learning-rate", "3e-3", "--validation-split", "0.001", "--no-progress",
]
# Log entries that measure the clock, not the computation.
TIMING_KEYS = ("runtime", "per_second", "preparation_time", "total_flos")


def offline_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`python -m hf_tinylm ARGS` in a fresh process, offline, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hf_tinylm", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=offline_env(**env),
    )


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def loss_log(folder: Path) -> list[dict]:
    """The saved log without clock measurements and without the Trainer's end-of-`train()` summary, whose
    `train_loss` averages only over the steps of the current process session (so it differs after a resume)."""
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return [
        {k: v for k, v in entry.items() if not any(t in k for t in TIMING_KEYS)}
        for entry in history
        if "train_loss" not in entry
    ]


def train_losses(folder: Path) -> list[float]:
    return [entry["loss"] for entry in loss_log(folder) if "loss" in entry]


def make_tiny_model(folder: Path, **overrides) -> Path:
    """An untrained TinyLM folder with a byte-level tokenizer, as `tinylm train` would save it."""
    from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
    from hf_tinylm.training.tokenizer import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    config = TinyLMConfig.from_preset(
        "tiny", **{"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
                   "intermediate_size": 64, "max_position_embeddings": 64, "eos_token_id": tokenizer.eos_token_id,
                   "bos_token_id": tokenizer.bos_token_id, **overrides}
    )
    TinyLMForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
