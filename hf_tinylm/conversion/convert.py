"""Convert GPT-2 checkpoints to TinyLM folders and back, measuring logits parity on the way.

Each conversion: read the source, map the tensors (with a progress bar), build the target model, save it with its
tokenizer, generation config and model card into a temporary folder, reload the *saved* model and compare its
logits with the source model's on a fixed token batch, and only then move the folder into place. So the parity
figure in the card describes the files actually written, and a failure at any step leaves no output behind.
"""

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import transformers
from huggingface_hub import ModelCardData
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from .. import TinyLMConfig, TinyLMForCausalLM
from ..model_card import render_model_card
from ..model_folder import check_tinylm_checkpoint
from ..output_folder import atomic_output_folder
from .gpt2_mapping import (
    REORDER_AND_UPCAST_NOTE,
    ConversionError,
    gpt2_config_from_tinylm,
    gpt2_to_tinylm_tensors,
    tinylm_config_from_gpt2,
    tinylm_to_gpt2_tensors,
)
from .sources import (
    OPENAI_TF,
    TINYLM,
    GPT2Source,
    detect_format,
    load_generation_config,
    load_openai_tf,
    load_tokenizer,
    load_transformers_gpt2,
    resolve_source,
    source_license,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_MAX_SHARD_SIZE = "5GB"
# The fixed batch every conversion is checked on: PARITY_BATCH rows of up to PARITY_LENGTH seeded token ids.
PARITY_BATCH, PARITY_LENGTH, PARITY_SEED = 2, 32, 0
# An fp32 conversion whose logits move by more than this fraction of their range is wrong, not rounding.
FP32_PARITY_LIMIT = 1e-4


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote, for the CLI summary and for tests."""

    output: Path
    source_format: str  # "gpt2", "openai-tf" or "tinylm"
    target: str  # "tinylm" or "gpt2"
    dtype: str
    num_parameters: int
    max_abs_logits_diff: float  # saved model (in `dtype`) vs the source model in float32, on `parity_batch`
    notes: tuple[str, ...] = ()


def convert(
    source: str | Path,
    output: str | Path,
    *,
    to: str = "tinylm",
    dtype: str | None = None,
    overwrite: bool = False,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    base_model: str | None = None,
    license: str | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert `source` (a folder or Hub repo id; its format detected) to a `to` ("tinylm" or "gpt2") folder.

    `dtype` ("float32", "float16", "bfloat16") defaults to the source's. `base_model` and `license` go into the
    card's metadata (defaults: the Hub repo id of the source, and the source card's license; OpenAI's release is
    MIT-licensed). An existing `output` is refused unless `overwrite`.
    """
    if to not in ("tinylm", "gpt2"):
        raise ValueError(f"Unknown target {to!r}: use 'tinylm' or 'gpt2'.")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}.")
    with _transformers_progress_bars(progress), atomic_output_folder(output, overwrite=overwrite) as staging:
        folder, repo_id = resolve_source(str(source), revision=revision, cache_dir=cache_dir)
        target = Path(output).resolve()
        if target == folder.resolve() or target in folder.resolve().parents:
            raise ConversionError(
                f"OUTPUT {output} would replace the source it is converted from; choose another folder."
            )
        source_format = detect_format(folder)
        if to == "gpt2":
            if source_format != TINYLM:
                raise ConversionError(
                    f"--to gpt2 exports a TinyLM checkpoint, but {source} is a {source_format} checkpoint; "
                    "to convert it to TinyLM, leave --to at its default (tinylm)."
                )
            result = _tinylm_to_gpt2(folder, repo_id, staging, dtype, max_shard_size, base_model, license, progress)
        else:
            if source_format == TINYLM:
                raise ConversionError(f"{source} is already a TinyLM checkpoint; use --to gpt2 to export it to GPT-2.")
            if source_format == OPENAI_TF:
                gpt2 = load_openai_tf(folder, progress=progress)
                license = license or "mit"  # OpenAI's gpt-2 repository: modified MIT license
            else:
                gpt2 = load_transformers_gpt2(folder, repo_id=repo_id, progress=progress)
            result = _gpt2_to_tinylm(gpt2, staging, dtype, max_shard_size, base_model, license, progress)
    final = dataclasses.replace(result, output=Path(output))
    logger.info("Wrote %s: max |Δlogits| = %.3g", final.output, final.max_abs_logits_diff)
    return final


# ----------------------------------------------------------------------------------------------- GPT-2 -> TinyLM


def _gpt2_to_tinylm(
    gpt2: GPT2Source, staging: Path, dtype, max_shard_size, base_model, license, progress
) -> ConversionResult:
    config = tinylm_config_from_gpt2(gpt2.config)
    notes = list(gpt2.notes)
    if getattr(gpt2.config, "reorder_and_upcast_attn", False):
        notes.append(REORDER_AND_UPCAST_NOTE)
    dtype = dtype or _dtype_name(gpt2.state_dict["wte.weight"].dtype)
    batch = parity_batch(config.vocab_size, config.max_position_embeddings)

    reference_weights = {
        name if name == "lm_head.weight" else f"transformer.{name}": tensor.float()
        for name, tensor in gpt2.state_dict.items()
    }
    reference = _build(GPT2LMHeadModel, gpt2.config, reference_weights)
    reference_logits = _logits(reference, batch)
    del reference, reference_weights

    tensors = gpt2_to_tinylm_tensors(gpt2.state_dict, gpt2.config)
    total = len(gpt2.state_dict) - ("lm_head.weight" in gpt2.state_dict and config.tie_word_embeddings)
    state_dict = dict(tqdm(tensors, total=total, desc="Converting tensors", unit="tensor", disable=not progress))
    model = _build(TinyLMForCausalLM, config, state_dict).to(DTYPES[dtype])
    if gpt2.generation_config is not None:
        model.generation_config = gpt2.generation_config
    num_parameters = model.num_parameters()
    model.save_pretrained(staging, max_shard_size=max_shard_size)
    del model, state_dict
    if gpt2.tokenizer is not None:
        gpt2.tokenizer.save_pretrained(staging)

    reloaded = TinyLMForCausalLM.from_pretrained(staging, dtype=DTYPES[dtype])
    diff = _check_parity(reference_logits, _logits(reloaded, batch), dtype)
    del reloaded

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model=base_model or gpt2.repo_id,
        license=license or gpt2.license,
        tags=["tinylm", "gpt2", "converted", "custom_code"],
    )
    render_model_card(
        "gpt2_to_tinylm",
        card_data,
        source_name=gpt2.name,
        source=gpt2.description,
        source_format="OpenAI TensorFlow" if gpt2.kind == OPENAI_TF else "Transformers GPT-2",
        config=config,
        gpt2_config=gpt2.config,
        num_parameters=f"{num_parameters:,}",
        num_parameters_short=_short_count(num_parameters),
        dtype=dtype,
        parity=_parity_fields(diff, batch, dtype, "Transformers' `GPT2LMHeadModel` holding the source weights"),
        has_tokenizer=gpt2.tokenizer is not None,
        notes=notes,
        versions=_versions(),
    ).save(staging / "README.md")
    return ConversionResult(staging, gpt2.kind, "tinylm", dtype, num_parameters, diff, tuple(notes))


# ----------------------------------------------------------------------------------------------- TinyLM -> GPT-2


def _tinylm_to_gpt2(
    folder: Path, repo_id, staging: Path, dtype, max_shard_size, base_model, license, progress
) -> ConversionResult:
    config = TinyLMConfig.from_pretrained(folder)
    gpt2_config = gpt2_config_from_tinylm(config)  # refuses what GPT-2 cannot represent, before loading weights
    check_tinylm_checkpoint(folder, config)
    source = TinyLMForCausalLM.from_pretrained(folder, dtype="auto")
    dtype = dtype or _dtype_name(source.model.embed_tokens.weight.dtype)
    batch = parity_batch(config.vocab_size, config.max_position_embeddings)
    source_state = source.state_dict()
    reference_logits = _logits(source.float(), batch)
    del source

    tensors = tinylm_to_gpt2_tensors(source_state, config)
    total = len(source_state) - config.tie_word_embeddings  # the tied head is not a separate GPT-2 tensor
    state_dict = dict(tqdm(tensors, total=total, desc="Converting tensors", unit="tensor", disable=not progress))
    model = _build(GPT2LMHeadModel, gpt2_config, state_dict).to(DTYPES[dtype])
    generation_config = load_generation_config(folder)
    if generation_config is not None:
        model.generation_config = generation_config
    num_parameters = model.num_parameters()
    model.save_pretrained(staging, max_shard_size=max_shard_size)
    del model, state_dict, source_state
    tokenizer = load_tokenizer(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)

    reloaded = GPT2LMHeadModel.from_pretrained(staging, dtype=DTYPES[dtype])
    diff = _check_parity(reference_logits, _logits(reloaded, batch), dtype)
    del reloaded

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model=base_model or repo_id,
        license=license or source_license(folder),
        tags=["gpt2", "tinylm", "converted"],
    )
    render_model_card(
        "tinylm_to_gpt2",
        card_data,
        source_name=repo_id or folder.name,
        source=f"the TinyLM checkpoint `{repo_id or folder.name}`",
        gpt2_config=gpt2_config,
        num_parameters=f"{num_parameters:,}",
        num_parameters_short=_short_count(num_parameters),
        dtype=dtype,
        parity=_parity_fields(diff, batch, dtype, "the source TinyLM model"),
        has_tokenizer=tokenizer is not None,
        versions=_versions(),
    ).save(staging / "README.md")
    return ConversionResult(staging, TINYLM, "gpt2", dtype, num_parameters, diff)


# ----------------------------------------------------------------------------------------------- helpers


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


def _build(model_class: type[PreTrainedModel], config, state_dict: dict[str, torch.Tensor]) -> PreTrainedModel:
    """`model_class(config)` holding exactly `state_dict` (no random initialisation; tied head re-tied), in eval."""
    with torch.device("meta"):
        model = model_class(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    tied = set(model.all_tied_weights_keys)
    if unexpected or set(missing) - tied:
        raise ConversionError(
            f"Internal mapping error building {model_class.__name__}: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}."
        )
    model.tie_weights()
    return model.eval()


@torch.no_grad()
def _logits(model: PreTrainedModel, batch: torch.Tensor) -> torch.Tensor:
    return model(batch).logits.float()


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
