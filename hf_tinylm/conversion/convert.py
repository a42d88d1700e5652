"""The one conversion pipeline, for every format and direction (formats are in `formats/`, see `base.Format`).

Each conversion: read the source in its format (a TinyLM config, TinyLM-named tensors, tokenizer, generation
settings), refuse what the target cannot express, map the tensors (with a progress bar), write the target into a
temporary place, reload what was *written* with the target's own reader and compare its logits with the source's
reference model on a fixed token batch, write the model card, and only then move the output into place. So the
parity figure in the card describes the files actually written, and a failure at any step leaves no output behind.
"""

import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import transformers
from huggingface_hub import ModelCardData
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from ..model_card import render_model_card
from ..output_folder import atomic_output_folder
from .base import Checkpoint, ConversionError, Format, refuse_unless_expressible
from .formats import detect_format, get_format, writable_formats
from .sources import resolve_source

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_MAX_SHARD_SIZE = "5GB"
DEFAULT_TARGET = "tinylm"
# The fixed batch every conversion is checked on: PARITY_BATCH rows of up to PARITY_LENGTH seeded token ids.
PARITY_BATCH, PARITY_LENGTH, PARITY_SEED = 2, 32, 0
# An fp32 conversion whose logits move by more than this fraction of their range is wrong, not rounding.
FP32_PARITY_LIMIT = 1e-4


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote, for the CLI summary and for tests."""

    output: Path
    source_format: str  # the registered name of the source's format, e.g. "gpt2", "openai-tf", "tinylm"
    target: str  # the registered name of the written format
    dtype: str
    num_parameters: int
    max_abs_logits_diff: float  # the written model (in `dtype`) vs the source's reference in float32
    notes: tuple[str, ...] = ()


def convert(
    source: str | Path,
    output: str | Path,
    *,
    to: str = DEFAULT_TARGET,
    dtype: str | None = None,
    overwrite: bool = False,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    base_model: str | None = None,
    license: str | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert `source` (a path or Hub repo id; its format detected) to format `to` at `output`.

    `to` is a registered writable format (`writable_formats()`). `dtype` ("float32", "float16", "bfloat16")
    defaults to the source's. `base_model` and `license` go into the card's metadata (defaults: the Hub repo id of
    the source, and the source's license). An existing `output` is refused unless `overwrite`.
    """
    target = get_format(to)
    if not target.writable:
        raise ValueError(f"{target.label} checkpoints cannot be written: use one of {', '.join(writable_formats())}.")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}.")
    with _transformers_progress_bars(progress), _staged_output(Path(output), target, overwrite) as staging:
        path, repo_id = resolve_source(str(source), revision=revision, cache_dir=cache_dir)
        destination = Path(output).resolve()
        if destination == path.resolve() or destination in path.resolve().parents:
            raise ConversionError(
                f"OUTPUT {output} would replace the source it is converted from; choose another path."
            )
        source_format = detect_format(path)
        _refuse_same_format(source, source_format, target)
        checkpoint = source_format.read(path, repo_id, progress)
        refuse_unless_expressible(target, checkpoint.config)
        result = _write(checkpoint, target, staging, dtype, max_shard_size, base_model, license, progress)
    final = dataclasses.replace(result, output=Path(output))
    logger.info("Wrote %s: max |Δlogits| = %.3g", final.output, final.max_abs_logits_diff)
    return final


def _refuse_same_format(source: str | Path, source_format: Format, target: Format) -> None:
    if source_format is not target:
        return
    if target.name == DEFAULT_TARGET:
        exports = ", ".join(name for name in writable_formats() if name != DEFAULT_TARGET)
        raise ConversionError(f"{source} is already a {target.label} checkpoint; use --to {exports} to export it.")
    raise ConversionError(
        f"{source} is already a {target.label} checkpoint; to convert it to TinyLM, leave --to at its default "
        f"({DEFAULT_TARGET})."
    )


def _write(
    checkpoint: Checkpoint, target: Format, staging: Path, dtype, max_shard_size, base_model, license, progress
) -> ConversionResult:
    """Map, write, reload and check one read checkpoint; then write its card (folders only)."""
    config = checkpoint.config
    dtype = dtype or _dtype_name(checkpoint.dtype)
    batch = parity_batch(config.vocab_size, config.max_position_embeddings)
    reference_logits = checkpoint.reference()(batch)[..., : config.vocab_size]

    tensors = tqdm(checkpoint.tensors(), total=checkpoint.num_tensors, desc="Converting tensors", unit="tensor",
                   disable=not progress)  # fmt: skip
    state_dict = {name: tensor.to(DTYPES[dtype]) for name, tensor in tensors}
    num_parameters = target.write(checkpoint, state_dict, staging, dtype, max_shard_size)
    del state_dict
    diff = _check_parity(reference_logits, target.reload(staging, dtype)(batch), dtype)

    if not target.output_is_file:
        card_data = ModelCardData(
            library_name="transformers",
            pipeline_tag="text-generation",
            base_model=base_model or checkpoint.repo_id,
            license=license or checkpoint.license,
            tags=list(dict.fromkeys([*target.card_tags, checkpoint.format, "converted"])),
        )
        render_model_card(
            target.card_template,
            card_data,
            source_name=checkpoint.name,
            source=checkpoint.description,
            source_format=get_format(checkpoint.format).label,
            config=config,
            num_parameters=f"{num_parameters:,}",
            num_parameters_short=_short_count(num_parameters),
            dtype=dtype,
            parity=_parity_fields(diff, batch, dtype, checkpoint.reference_name),
            has_tokenizer=checkpoint.tokenizer is not None,
            notes=checkpoint.notes,
            versions=_versions(),
            **target.card_fields(checkpoint, staging),
        ).save(staging / "README.md")
    return ConversionResult(staging, checkpoint.format, target.name, dtype, num_parameters, diff,
                            tuple(checkpoint.notes))  # fmt: skip


# ----------------------------------------------------------------------------------------------- helpers


@contextmanager
def _staged_output(output: Path, target: Format, overwrite: bool) -> Iterator[Path]:
    """Where `target` writes: a temporary folder (or a file in one) that replaces `output` only on success."""
    if not target.output_is_file:
        with atomic_output_folder(output, overwrite=overwrite) as staging:
            yield staging
        return
    if output.exists() and not overwrite:
        raise FileExistsError(f"Output file {output} already exists; pass --overwrite to replace it.")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.partial-", dir=output.parent) as staging:
        yield Path(staging) / output.name
        os.replace(Path(staging) / output.name, output)


@contextmanager
def _transformers_progress_bars(enabled: bool) -> Iterator[None]:
    """Show or hide Transformers' own bars (writing shards, loading weights) for the conversion's duration."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()


def parity_batch(vocab_size: int, max_positions: int) -> torch.Tensor:
    """The fixed (PARITY_BATCH, <= PARITY_LENGTH) batch of seeded token ids every conversion is checked on."""
    generator = torch.Generator().manual_seed(PARITY_SEED)
    return torch.randint(0, vocab_size, (PARITY_BATCH, min(PARITY_LENGTH, max_positions)), generator=generator)


def _check_parity(reference: torch.Tensor, converted: torch.Tensor, dtype: str) -> float:
    """Max |Δlogits|; an fp32 conversion off by more than rounding is refused (a mapping bug, never shipped)."""
    diff = (reference - converted).abs().max().item()
    scale = max(1.0, reference.abs().max().item())
    if dtype == "float32" and not diff <= FP32_PARITY_LIMIT * scale:
        raise ConversionError(
            f"Parity check failed: the converted model's logits differ from the source model's by up to {diff:.3g} "
            f"(allowed {FP32_PARITY_LIMIT * scale:.3g} in float32). The conversion was not saved."
        )
    return diff


def _parity_fields(diff: float, batch: torch.Tensor, dtype: str, reference: str) -> dict:
    return {
        "max_abs_diff": f"{diff:.3g}",
        "batch": f"{batch.shape[0]} x {batch.shape[1]} token ids (seeded with {PARITY_SEED})",
        "reference": reference,
        "dtype": dtype,
    }


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ConversionError(f"The source weights are {dtype}; choose an output dtype with --dtype ({', '.join(DTYPES)}).")


def _short_count(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.1f}K"


def _versions() -> dict[str, str]:
    try:
        tinylm = version("hf-tinylm")
    except PackageNotFoundError:
        tinylm = "unknown"
    return {"hf_tinylm": tinylm, "transformers": transformers.__version__, "torch": torch.__version__}
