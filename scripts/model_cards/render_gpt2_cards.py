"""Measure the four GPT-2 sizes by real conversions, then render their model cards from the measurements.

Usage: python scripts/model_cards/render_gpt2_cards.py [--data DIR] [--work-dir DIR]
       python scripts/model_cards/render_gpt2_cards.py --render-only

For each size a seeded random `GPT2LMHeadModel` of OpenAI's exact shape (taken from the TinyLM preset) is saved and
converted by `hf_tinylm.conversion.convert.convert`, the code `tinylm convert` runs; the real GPT-2 material in the
shared data folder (`--data`, default `$HF_TINYLM_TEST_DATA`) is converted too. The figures go to
`model_cards/gpt2_measurements.json` (with date, versions and machine), and `model_cards/<size>.md` are rendered from
it and `model_cards/templates/gpt2_release.md`, so no card carries a number typed in by hand. `--render-only`
re-renders the cards from the committed JSON. Sizes are measured smallest first, so the process's peak memory after
each one is that size's peak. Needs about 13 GiB of memory and 13 GB of disk for gpt2-xl.
"""

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import transformers
from huggingface_hub import ModelCardData
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.conversion import convert as convert_module
from hf_tinylm.conversion.formats.gpt2 import gpt2_config_from_tinylm, tinylm_to_gpt2_tensors
from hf_tinylm.conversion.formats.openai_tf import plan_openai_tf
from hf_tinylm.conversion.tf_checkpoint import TFCheckpointReader
from hf_tinylm.model_card import render_model_card

CARDS = Path(__file__).resolve().parents[2] / "model_cards"
MEASUREMENTS = CARDS / "gpt2_measurements.json"
# preset name -> (OpenAI's name for the model, OpenAI's release folder)
RELEASES = {
    "gpt2": ("GPT-2", "124M"),
    "gpt2-medium": ("GPT-2 Medium", "355M"),
    "gpt2-large": ("GPT-2 Large", "774M"),
    "gpt2-xl": ("GPT-2 XL", "1558M"),
}
SEED = 0
# The folders of the shared real-data folder that `measure_real_data` reads.
REAL_DATA = ("gpt2-124M-real-weights-h0", "gpt2-openai-tf-tiny", "gpt2-124M-tf-checkpoint-meta")
# Config fields that must come out of a conversion exactly as the preset has them ("It is the TinyLM preset ...").
_NOT_ARCHITECTURE = {"architectures", "auto_map", "dtype", "transformers_version", "_name_or_path"}


class MeasurementError(RuntimeError):
    """A measurement contradicts what the card would claim."""


def measure_size(name: str, work_dir: Path, progress: bool = False, **overrides) -> dict:
    """Convert a seeded random `GPT2LMHeadModel` shaped like preset `name` (with `overrides`) and measure it."""
    config = TinyLMConfig.from_preset(name, **overrides)
    torch.manual_seed(SEED)
    source = GPT2LMHeadModel(gpt2_config_from_tinylm(config))
    gpt2_parameters = source.num_parameters()
    source.save_pretrained(work_dir / "gpt2")
    del source
    gc.collect()
    with torch.device("meta"):
        preset_parameters = TinyLMForCausalLM(config).num_parameters()

    start = time.perf_counter()
    result = convert_module.convert(work_dir / "gpt2", work_dir / "tinylm", progress=progress)
    seconds = time.perf_counter() - start
    if not gpt2_parameters == preset_parameters == result.num_parameters:
        raise MeasurementError(
            f"{name}: parameter counts disagree: GPT2LMHeadModel {gpt2_parameters:,}, preset {preset_parameters:,}, "
            f"converted {result.num_parameters:,}."
        )
    converted = TinyLMConfig.from_pretrained(result.output).to_dict()
    differing = sorted(k for k, v in config.to_dict().items() if k not in _NOT_ARCHITECTURE and converted.get(k) != v)
    if differing:
        raise MeasurementError(f"{name}: the converted config differs from the preset in {', '.join(differing)}.")
    weights = sorted(result.output.glob("*.safetensors"))
    return {
        "parameters": result.num_parameters,
        "max_abs_logits_diff": result.max_abs_logits_diff,
        "safetensors_files": len(weights),
        "safetensors_bytes": sum(path.stat().st_size for path in weights),
        "conversion_seconds": round(seconds, 1),
        "peak_memory_gib": round(_peak_memory_gib(), 2),
    }


def measure_real_data(data: Path, work_dir: Path) -> dict:
    """Convert the shared folder's real GPT-2 material: OpenAI's block-0 weights, a TF-written OpenAI-layout release,
    and OpenAI's real 124M checkpoint index."""
    block0 = _real_block0_gpt2(data / "gpt2-124M-real-weights-h0")
    block0.save_pretrained(work_dir / "block0")
    block0_result = convert_module.convert(work_dir / "block0", work_dir / "block0-tinylm", progress=False)

    tiny = data / "gpt2-openai-tf-tiny"
    tf_result = convert_module.convert(tiny / "openai", work_dir / "tf-tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tf_result.output)
    back = dict(tinylm_to_gpt2_tensors(model.state_dict(), model.config))
    twin = load_file(tiny / "hf" / "model.safetensors")
    reference = np.load(tiny / "reference_logits.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(reference["input_ids"])).logits[:, :, torch.from_numpy(reference["vocab_idx"])]

    index = data / "gpt2-124M-tf-checkpoint-meta"
    entries = TFCheckpointReader(index / "model.ckpt").entries()
    hparams = json.loads((index / "hparams.json").read_text(encoding="utf-8"))
    config = GPT2Config(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_embd=hparams["n_embd"],
                        n_head=hparams["n_head"], n_layer=hparams["n_layer"])  # fmt: skip
    names, _ = plan_openai_tf(entries, config)
    if len(names) != len(entries):
        raise MeasurementError(f"OpenAI's 124M index: {len(names)} of {len(entries)} tensors map onto GPT-2.")
    return {
        "block0_max_abs_logits_diff": block0_result.max_abs_logits_diff,
        "tf_max_abs_logits_diff": tf_result.max_abs_logits_diff,
        "tf_tensors": len(twin),
        "tf_identical_tensors": sum(name in back and torch.equal(back[name], t) for name, t in twin.items()),
        "tf_reference_max_abs_diff": float(np.abs(logits.numpy() - reference["logits"]).max()),
        "index_tensors": len(entries),
        "index_parameters": sum(entry.num_elements for entry in entries.values()),
    }


def measure(data: Path, work_root: Path | None = None, progress: bool = True) -> dict:
    """All measurements, each size and the real data converted in a temporary folder under `work_root`."""
    measurements = {"measured": _environment(), "seed": SEED, "parity_batch": _parity_batch(), "sizes": {}}
    for number, name in enumerate(RELEASES, 1):
        print(f"[{number}/{len(RELEASES) + 1}] {name}: converting a random GPT2LMHeadModel of this shape", flush=True)
        with tempfile.TemporaryDirectory(dir=work_root) as work_dir:
            size = measure_size(name, Path(work_dir), progress=progress)
        measurements["sizes"][name] = size
        print(f"    {size['parameters']:,} parameters, max |Δlogits| = {size['max_abs_logits_diff']:.3g}, "
              f"{size['conversion_seconds']} s, peak {size['peak_memory_gib']} GiB", flush=True)  # fmt: skip
    print(f"[{len(RELEASES) + 1}/{len(RELEASES) + 1}] real GPT-2 material in {data}", flush=True)
    with tempfile.TemporaryDirectory(dir=work_root) as work_dir:
        measurements["real_data"] = measure_real_data(data, Path(work_dir))
    return measurements


def render_cards(measurements: dict) -> dict[str, str]:
    """The text of `model_cards/<size>.md` for each size, from `measurements` (the JSON's content)."""
    real = measurements["real_data"]
    cards = {}
    for name, (title, release) in RELEASES.items():
        size = measurements["sizes"][name]
        card_data = ModelCardData(
            library_name="transformers",
            pipeline_tag="text-generation",
            base_model=f"openai-community/{name}",
            license="mit",
            language=["en"],
            tags=["tinylm", "gpt2", "converted", "custom_code"],
        )
        card = render_model_card(
            "gpt2_release",
            card_data,
            name=name,
            title=title,
            release=release,
            config=TinyLMConfig.from_preset(name),
            seed=measurements["seed"],
            parity_batch=measurements["parity_batch"],
            measured=measurements["measured"],
            size={
                "parameters": f"{size['parameters']:,}",
                "short": _short_count(size["parameters"]),
                "max_abs_logits_diff": f"{size['max_abs_logits_diff']:.3g}",
                "gigabytes": f"{size['safetensors_bytes'] / 1e9:.2f}",
                "files": _files(size["safetensors_files"]),
                "seconds": f"{size['conversion_seconds']}",
                "peak_memory": f"{size['peak_memory_gib']}",
            },
            real={
                **real,
                "index_parameters": f"{real['index_parameters']:,}",
                **{key: f"{real[key]:.3g}" for key in real if "diff" in key},
            },
        )
        cards[name] = str(card)
    return cards


def write_cards(measurements: dict) -> None:
    for name, text in render_cards(measurements).items():
        (CARDS / f"{name}.md").write_text(text, encoding="utf-8", newline="")
        print(f"wrote {CARDS / name}.md", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="render_gpt2_cards.py",
        description="Measure the GPT-2 sizes by real conversions and render model_cards/gpt2*.md from the results.",
    )
    parser.add_argument("--render-only", action="store_true", help="re-render the cards from the committed JSON")
    parser.add_argument("--data", type=Path, default=os.environ.get("HF_TINYLM_TEST_DATA") or None,
                        help="the shared real-data folder (default: $HF_TINYLM_TEST_DATA)")  # fmt: skip
    parser.add_argument("--work-dir", type=Path, help="where the temporary conversions go (default: the system's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the conversions' progress bars")
    args = parser.parse_args(argv)
    if args.no_progress:
        hf_logging.disable_progress_bar()
    try:
        if args.render_only:
            measurements = json.loads(MEASUREMENTS.read_text(encoding="utf-8"))
        else:
            missing = [name for name in REAL_DATA if args.data is None or not (args.data / name).is_dir()]
            if missing:
                raise MeasurementError(
                    f"--data (or $HF_TINYLM_TEST_DATA) must name the shared real-data folder, with {', '.join(missing)}."
                )
            measurements = measure(args.data, args.work_dir, progress=not args.no_progress)
            MEASUREMENTS.write_text(json.dumps(measurements, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"wrote {MEASUREMENTS}", flush=True)
        write_cards(measurements)
    except (MeasurementError, OSError, ValueError, KeyError) as error:
        print(f"render_gpt2_cards.py: error: {error}", file=sys.stderr)
        return 1
    return 0


def _real_block0_gpt2(folder: Path) -> GPT2LMHeadModel:
    """A 1-layer GPT-2 at 124M width holding OpenAI's real block-0 attention and LayerNorm weights and biases, real
    position table and final LayerNorm; the MLP kernels and token embeddings were not obtainable (random, vocab 512).
    """

    def real(stem: str, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(np.fromfile(folder / f"{stem}.dat", ">f4").astype("<f4").reshape(shape))

    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=512, n_embd=768, n_head=12, n_layer=1, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    block = model.transformer.h[0]
    parts = ("query", "key", "value")
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(real("input/wpe", (1024, 768)))
        block.attn.c_attn.weight.copy_(torch.cat([real(f"decoder1/att.{p}.w", (768, 768)) for p in parts], dim=1))
        block.attn.c_attn.bias.copy_(torch.cat([real(f"decoder1/att.{p}.b", (768,)) for p in parts]))
        block.attn.c_proj.weight.copy_(real("decoder1/att.proj.w", (768, 768)))
        block.attn.c_proj.bias.copy_(real("decoder1/att.proj.b", (768,)))
        block.mlp.c_fc.bias.copy_(real("decoder1/mlp.layer1.b", (3072,)))
        block.mlp.c_proj.bias.copy_(real("decoder1/mlp.layer2.b", (768,)))
        for norm, stem in ((block.ln_1, "decoder1/att.norm"), (block.ln_2, "decoder1/mlp.norm"),
                           (model.transformer.ln_f, "output/norm")):  # fmt: skip
            norm.weight.copy_(real(f"{stem}.w", (768,)))
            norm.bias.copy_(real(f"{stem}.b", (768,)))
    return model


def _parity_batch() -> str:
    rows, length, seed = convert_module.PARITY_BATCH, convert_module.PARITY_LENGTH, convert_module.PARITY_SEED
    return f"{rows} x {length} token ids (seeded with {seed})"


def _short_count(count: int) -> str:
    """OpenAI's way of naming the sizes: 124M, 355M, 774M, 1.56B."""
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def _files(count: int) -> str:
    if count == 1:
        return "one `model.safetensors` file"
    return f"{count} shards with the default `--max-shard-size {convert_module.DEFAULT_MAX_SHARD_SIZE}`"


def _peak_memory_gib() -> float:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _environment() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": date.today().isoformat(),
        "hf_tinylm": version("hf-tinylm"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {memory:.1f} GiB RAM",
    }


if __name__ == "__main__":
    sys.exit(main())
