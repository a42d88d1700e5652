"""`tinylm train`: pre-train or fine-tune a TinyLM with `Trainer`, then save a Hub-ready folder.

Layout on disk: Trainer checkpoints (for `--resume`) go to `<output>-checkpoints/` (or `--checkpoint-dir`), together
with the tokenizer trained for a from-scratch run; the final folder `<output>/` is written all at once when
training succeeded (weights, config, code files for `trust_remote_code`, tokenizer, generation config, model card,
`trainer_state.json`, `all_results.json` and the picture of the loss curves, `training_curves.png`).
"""

import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCardData
from transformers import (
    AutoModelForCausalLM,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..configuration_tinylm import TinyLMConfig
from ..model_card import render_model_card
from ..model_folder import check_tinylm_checkpoint, read_tinylm_config, weight_shapes
from ..modeling_tinylm import TinyLMForCausalLM
from ..output_folder import atomic_output_folder
from ..terminal import library_output
from . import data as data_lib
from .curves import CURVES_FILE, plot_training_curves
from .progress import TrainingProgress
from .settings import TOKENIZER_KINDS, TrainSettings
from .tokenizer import BYTE_VOCAB_SIZE, byte_level_tokenizer, load_tokenizer, train_bpe_tokenizer

logger = logging.getLogger(__name__)

# What an exact resume reads from a Trainer checkpoint: the file reported when absent -> the names that can hold it
# (the others are the layouts of FSDP and of multi-process RNG states). Trainer writes trainer_state.json last.
CHECKPOINT_FILES = {
    "model.safetensors": ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                          "pytorch_model_fsdp*"),
    "optimizer.pt": ("optimizer.pt", "optimizer.bin", "optimizer_*"),
    "scheduler.pt": ("scheduler.pt",),
    "rng_state.pth": ("rng_state.pth", "rng_state_*.pth"),
    "tokenizer_config.json": ("tokenizer_config.json",),
    "trainer_state.json": ("trainer_state.json",),
}


@dataclass
class TrainReport:
    output: Path
    steps: int
    tokens_seen: int
    train_loss: float  # the last logged training loss (mean over the last --logging-steps steps)
    perplexity_before: float
    perplexity_after: float
    log_history: list[dict]
    train_tokens_per_second: float  # tokens of this session over the time spent in training steps (no evaluations)
    peak_memory_mb: float | None  # see `TrainingMeter`; None where it cannot be measured


def default_checkpoint_dir(output: Path) -> Path:
    return output.parent / f"{output.name}-checkpoints"


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


class TrainingMeter(TrainerCallback):
    """The time spent in training steps (evaluations and checkpoints left out) and the tokens trained in it, and the
    peak memory of the training: on a GPU what torch allocated there; on a CPU the process's peak resident memory
    (Linux's `VmHWM`, reset when training begins, so it includes the Python process and the data), else None."""

    def __init__(self):
        self.seconds = 0.0
        self.tokens = 0
        self.peak_memory_mb: float | None = None
        self._on_gpu = self._resident_peak_reset = False
        self._step_start = self._tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._tokens_at_start = state.num_input_tokens_seen
        self._on_gpu = torch.cuda.is_available() and not args.use_cpu
        if self._on_gpu:
            torch.cuda.reset_peak_memory_stats()
        else:
            self._resident_peak_reset = _reset_resident_peak()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self._step_start

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens = state.num_input_tokens_seen - self._tokens_at_start
        if self._on_gpu:
            self.peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20
        elif self._resident_peak_reset:  # else the peak since the process began would be reported as this run's
            self.peak_memory_mb = _resident_peak_mb()

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _reset_resident_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: "5" resets the process's peak resident size
    except OSError:
        return False
    return True


def _resident_peak_mb() -> float | None:
    status = Path("/proc/self/status").read_text()
    kilobytes = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return kilobytes / 1024 if kilobytes is not None else None


class TinyLMTrainer(Trainer):
    """`Trainer` that reports the held-out perplexity, exp(eval_loss), next to every eval loss."""

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, start_time)


def train(settings: TrainSettings, callbacks: Sequence[TrainerCallback] = ()) -> TrainReport:
    """Run `tinylm train`, with `callbacks` added to the Trainer's. Input problems raise ValueError/OSError before
    anything is written."""
    s = settings
    output = Path(s.output)
    checkpoint_dir = Path(s.checkpoint_dir) if s.checkpoint_dir else default_checkpoint_dir(output)
    if output.exists() and not s.overwrite:
        raise FileExistsError(f"Output folder {output} already exists; pass --overwrite to replace it.")
    files = data_lib.resolve_data_files(s.data, s.glob) if s.data else []
    validation_files = data_lib.resolve_data_files(s.validation_data, s.glob) if s.validation_data else []
    if not files and not s.dataset:
        raise ValueError("No training data: give --data FILE_OR_FOLDER... or --dataset NAME.")
    if not 0 < s.validation_split < 1:
        raise ValueError(f"--validation-split must lie in (0, 1), got {s.validation_split}.")
    base_config, base_name = _base_config(s.model, s.preset, s.config, s.config_overrides)
    resume_from = _resume_checkpoint(s.resume, checkpoint_dir)
    fine_tuning = s.model is not None

    # Building the arguments initialises torch.distributed under torchrun / accelerate launch.
    args = _training_arguments(s, checkpoint_dir, fine_tuning, evaluate_first=resume_from is None)
    with args.main_process_first(desc="preparing data and tokenizer"):
        if args.should_save and resume_from is None:
            _clear_old_checkpoints(checkpoint_dir, s.overwrite)
        raw = data_lib.load_text_dataset(files, s.dataset, s.dataset_config, s.dataset_split, s.text_column)
        vocab_size = s.vocab_size or base_config.vocab_size
        tokenizer, tokenizer_note = make_tokenizer(
            s.tokenizer, s.model, raw, checkpoint_dir, resume_from, args.should_save, vocab_size, s.show_progress
        )
        block_size = _block_size(s.block_size, base_config)
        blocks = data_lib.tokenize_and_pack(raw, tokenizer, block_size)
        if validation_files:
            raw_validation = data_lib.load_text_dataset(validation_files, text_column=s.text_column)
            train_blocks = blocks
            validation_blocks = data_lib.tokenize_and_pack(raw_validation, tokenizer, block_size)
            if len(train_blocks) == 0 or len(validation_blocks) == 0:
                raise ValueError(f"Training or validation data is shorter than one block of {block_size} tokens.")
        else:
            train_blocks, validation_blocks = data_lib.split_blocks(blocks, s.validation_split)

    set_seed(s.seed)
    model = _build_model(s.model, base_config, tokenizer)
    trainer = TinyLMTrainer(
        model=model,
        args=args,
        train_dataset=train_blocks,
        eval_dataset=validation_blocks,
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(TrainingProgress(bar=s.show_progress, log=not s.quiet))
    meter = TrainingMeter()
    for callback in (meter, *callbacks):
        trainer.add_callback(callback)
    with library_output(progress=False, quiet=s.quiet):  # no saving bars nested in the training bar
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        final = _final_evaluation(trainer)

    history = trainer.state.log_history
    report = TrainReport(
        output=output,
        steps=trainer.state.global_step,
        tokens_seen=int(trainer.state.num_input_tokens_seen),
        train_loss=next(e["loss"] for e in reversed(history) if "loss" in e),
        perplexity_before=next(e["eval_perplexity"] for e in history if "eval_perplexity" in e),
        perplexity_after=final["eval_perplexity"],
        log_history=history,
        train_tokens_per_second=meter.tokens_per_second,
        peak_memory_mb=meter.peak_memory_mb,
    )
    facts = dict(
        base=base_name,
        fine_tuned=fine_tuning,
        data=s.data_description or _describe_sources(s.data, s.dataset, s.dataset_config),
        dataset=s.dataset,
        tokenizer=tokenizer_note,
        train_blocks=len(train_blocks),
        validation_blocks=len(validation_blocks),
        block_size=block_size,
        global_batch=args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        args=args,
        runtime=result.metrics.get("train_runtime"),
        epochs=trainer.state.epoch or 0.0,
    )
    _save_output(trainer, tokenizer, report, facts, s.overwrite)
    if not s.keep_checkpoints and trainer.is_world_process_zero():
        _delete_checkpoints(checkpoint_dir)
    return report


def _final_evaluation(trainer: Trainer) -> dict[str, float]:
    """The held-out metrics after the last step: logged already when an evaluation fell on that step, else measured
    now (so the final evaluation never runs twice)."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == trainer.state.global_step:
            return entry
    return trainer.evaluate()


# ----------------------------------------------------------------------------------------------- inputs


def _base_config(
    model: str | None, preset: str | None, config: str | None, overrides: dict[str, Any]
) -> tuple[TinyLMConfig, str]:
    """The config to train and how the model card names it: a model folder's, or a preset's or config file's with
    `overrides` applied the same way to both (`TinyLMConfig.with_overrides`)."""
    chosen = [flag for flag, value in (("--model", model), ("--preset", preset), ("--config", config)) if value]
    if len(chosen) > 1:
        raise ValueError(f"Give only one of --model, --preset, --config (got {', '.join(chosen)}).")
    if model:
        if overrides:
            raise ValueError("--config-overrides applies to --preset/--config (a new model), not to --model.")
        found = read_tinylm_config(model)
        check_tinylm_checkpoint(Path(model), found)
        return found, str(model)
    if config:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found: {path}")
        return TinyLMConfig.from_json_file(str(path)).with_overrides(**overrides), (
            f"config `{path.name}`" + _describe(overrides))
    preset = preset or "tiny"
    return TinyLMConfig.from_preset(preset, **overrides), f"preset `{preset}`" + _describe(overrides)


def _describe(overrides: dict[str, Any]) -> str:
    return (" with " + ", ".join(f"{k}={v}" for k, v in overrides.items())) if overrides else ""


def _resume_checkpoint(resume: str | None, checkpoint_dir: Path) -> Path | None:
    """The checkpoint `--resume` continues from: the one named, which must be complete, or for "latest" the newest
    complete one in `checkpoint_dir`, passing over (with a warning) newer ones that an interrupt cut short."""
    if resume is None:
        return None
    if resume != "latest":
        problem = checkpoint_problem(Path(resume))
        if problem:
            raise FileNotFoundError(f"--resume {resume}: not a complete Trainer checkpoint: {problem}.")
        return Path(resume)
    checkpoints = _checkpoints_newest_first(checkpoint_dir)
    if not checkpoints:
        raise FileNotFoundError(f"--resume: no checkpoint found in {checkpoint_dir}.")
    skipped = []
    for checkpoint in checkpoints:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if skipped:
                logger.warning("--resume: passing over incomplete %s; resuming from %s.", "; ".join(skipped),
                               checkpoint.name)
            return checkpoint
        skipped.append(f"{checkpoint.name} ({problem})")
    raise FileNotFoundError(f"--resume: no complete checkpoint in {checkpoint_dir}: {'; '.join(skipped)}.")


def _checkpoints_newest_first(checkpoint_dir: Path) -> list[Path]:
    """The `checkpoint-<step>` folders in `checkpoint_dir`, highest step first."""
    steps = {}
    for path in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if step.isdigit() and path.is_dir():
            steps[path] = int(step)
    return sorted(steps, key=steps.get, reverse=True)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed exactly (missing files, a cut-off trainer state, unreadable weights), or
    None if it can."""
    if not checkpoint.is_dir():
        return f"{checkpoint} is not a folder"
    missing = [name for name, globs in CHECKPOINT_FILES.items() if not any(any(checkpoint.glob(g)) for g in globs)]
    if missing:
        return f"it lacks {', '.join(missing)}"
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "its trainer_state.json is cut off"
    if any(checkpoint.glob("model.safetensors*")):
        try:
            weight_shapes(checkpoint)
        except (ValueError, OSError) as error:
            return str(error)
    return None


def _delete_checkpoints(checkpoint_dir: Path) -> None:
    """After success: the checkpoints and the tokenizer this run saved there, and the folder if nothing else is in
    it (the final folder holds everything needed)."""
    for path in [*checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"), checkpoint_dir / "tokenizer"]:
        shutil.rmtree(path, ignore_errors=True)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()


def _clear_old_checkpoints(checkpoint_dir: Path, overwrite: bool) -> None:
    if checkpoint_dir.is_dir() and any(checkpoint_dir.glob("checkpoint-*")):
        if not overwrite:
            raise FileExistsError(
                f"{checkpoint_dir} holds checkpoints of an earlier run: pass --resume to continue it, or "
                "--overwrite to start over."
            )
        shutil.rmtree(checkpoint_dir)


def make_tokenizer(kind: str, model: str | None, raw, checkpoint_dir: Path, resume_from, is_main: bool,
                   vocab_size: int, progress: bool):
    """The tokenizer and a one-line description of it for the model card: `kind` (a folder, or one of
    `TOKENIZER_KINDS` for a new one of `vocab_size` tokens, byte-level when that is at most 257), or the tokenizer
    of the `model` folder being fine-tuned."""
    if kind not in TOKENIZER_KINDS:
        return load_tokenizer(kind), f"from {kind}"
    if model:
        if not (Path(model) / "tokenizer_config.json").is_file():
            raise ValueError(f"{model} has no tokenizer; pass --tokenizer FOLDER.")
        return load_tokenizer(model), "the base model's tokenizer"
    # From scratch: the main process builds the tokenizer and saves it in the checkpoint folder, where the other
    # processes read it, so all of them use exactly the same vocabulary; a resumed run reads the checkpoint's copy.
    saved = checkpoint_dir / "tokenizer"
    if resume_from is not None:
        tokenizer = load_tokenizer(resume_from)  # Trainer saves the tokenizer into every checkpoint
    elif not is_main:
        tokenizer = load_tokenizer(saved)
    else:
        if kind == "auto":
            kind = "byte" if vocab_size <= BYTE_VOCAB_SIZE else "bpe"
        if kind == "byte":
            tokenizer = byte_level_tokenizer()
        else:
            tokenizer = train_bpe_tokenizer(data_lib.iter_texts(raw), vocab_size, show_progress=progress)
        with atomic_output_folder(saved, overwrite=True) as staging:
            tokenizer.save_pretrained(str(staging))
    if len(tokenizer) == BYTE_VOCAB_SIZE:
        return tokenizer, "byte-level (256 bytes + `<|endoftext|>`)"
    return tokenizer, f"byte-level BPE with {len(tokenizer)} tokens, trained on the training data"


def _block_size(requested: int | None, config: TinyLMConfig) -> int:
    block_size = requested or min(1024, config.max_position_embeddings)
    if block_size <= 0:
        raise ValueError(f"--block-size must be positive, got {block_size}.")
    if config.context_limit is not None and block_size > config.context_limit:
        raise ValueError(f"--block-size {block_size} exceeds the model's context of {config.context_limit} positions.")
    return block_size


def _build_model(model_folder: str | None, config: TinyLMConfig, tokenizer):
    """The model to train (the folder's to fine-tune, else a new one of `config`), with the tokenizer's special
    tokens (pad = EOS, as in GPT-2) in its configs."""
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    if model_folder:
        model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)
        if len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
    else:
        config.vocab_size = len(tokenizer)
        config.update(special)
        model = TinyLMForCausalLM(config)
    model.config.update(special)
    model.generation_config.update(**special)
    return model


def _training_arguments(s: TrainSettings, checkpoint_dir: Path, fine_tuning: bool, evaluate_first: bool):
    """The Trainer's arguments. `evaluate_first` gives the perplexity before training as the first eval entry of
    the log (a resumed run has it in the restored log already). It must be `eval_on_start`, not a call to
    `trainer.evaluate()` before `train()`: that call marks the model as prepared by Accelerate, and `train()`
    then skips the DDP wrapper, so processes silently stop averaging gradients."""
    learning_rate = s.learning_rate if s.learning_rate is not None else (5e-5 if fine_tuning else 5e-4)
    # On a CPU-only machine say so: Accelerate then sets up multi-process CPU training (gloo) under torchrun,
    # and the Trainer accepts bf16 on CPU.
    no_accelerator = not (torch.cuda.is_available() or torch.backends.mps.is_available() or torch.xpu.is_available())
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size or s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=s.weight_decay,
        warmup_steps=s.warmup_steps,
        lr_scheduler_type=s.lr_scheduler,
        max_grad_norm=s.max_grad_norm,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        eval_on_start=evaluate_first,
        eval_strategy="steps" if s.eval_steps else "no",
        eval_steps=s.eval_steps,
        save_strategy="steps" if s.save_steps else "no",
        save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        seed=s.seed,
        data_seed=s.seed,
        bf16=s.bf16,
        use_cpu=no_accelerator,
        activation_checkpointing=s.gradient_checkpointing,
        torch_compile=s.compile,
        include_num_input_tokens_seen="all",
        ddp_backend=s.ddp_backend,
        ddp_find_unused_parameters=False,
        fsdp=s.fsdp,
        fsdp_config=s.fsdp_config,
        dataloader_num_workers=s.dataloader_workers,
        disable_tqdm=not s.show_progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=s.report_to,
    )


def _describe_sources(data: list[str], dataset: str | None, dataset_config: str | None) -> str:
    parts = [f"`{path}`" for path in data]
    if dataset:
        parts.append(f"the `{dataset}` dataset" + (f" ({dataset_config})" if dataset_config else ""))
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- output


def _save_output(trainer: Trainer, tokenizer, report: TrainReport, facts: dict, overwrite: bool) -> None:
    """Write the Hub-ready folder from the main process, all at once; every process takes part in gathering an
    FSDP-sharded state dict first."""
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        context = model.config.max_position_embeddings
        model.generation_config.update(do_sample=True, temperature=0.8, top_k=50, top_p=0.95,
                                       max_new_tokens=min(100, context // 2))
        with atomic_output_folder(report.output, overwrite=overwrite) as staging:
            model.save_pretrained(str(staging), state_dict=state_dict)
            tokenizer.model_max_length = context
            tokenizer.save_pretrained(str(staging))
            trainer.state.save_to_json(str(staging / "trainer_state.json"))
            results = dict(train_loss=report.train_loss, steps=report.steps, tokens_seen=report.tokens_seen,
                           perplexity_before=report.perplexity_before, perplexity_after=report.perplexity_after,
                           train_runtime=facts["runtime"], train_tokens_per_second=report.train_tokens_per_second,
                           peak_memory_mb=report.peak_memory_mb)
            (staging / "all_results.json").write_text(json.dumps(results, indent=2) + "\n")
            plot_training_curves(report.log_history, staging / CURVES_FILE, report.output.name)
            _model_card(model, report, facts, report.output.name).save(str(staging / "README.md"))
    trainer.accelerator.wait_for_everyone()


def _model_card(model, report: TrainReport, facts: dict, name: str):
    args: TrainingArguments = facts["args"]
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    device = "GPU" if torch.cuda.is_available() and not args.use_cpu else "CPU"
    processes = f"{args.world_size} process" + ("es" if args.world_size > 1 else "")
    hardware = (f"{processes} on {device} ({platform.machine()}, {os.cpu_count()} cores visible, "
                f"torch {torch.__version__})")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["tinylm", "text-generation", "custom_code"],
        datasets=[facts["dataset"]] if facts["dataset"] else None,
        model_name=name,
    )
    return render_model_card(
        "trained",
        card_data,
        model_name=name,
        base=facts["base"],
        fine_tuned=facts["fine_tuned"],
        data=facts["data"],
        tokenizer=facts["tokenizer"],
        parameters=f"{parameters:,}",
        config=model.config,
        steps=report.steps,
        epochs=f"{facts['epochs']:.2f}",
        tokens_seen=f"{report.tokens_seen:,}",
        train_blocks=facts["train_blocks"],
        validation_blocks=facts["validation_blocks"],
        block_size=facts["block_size"],
        global_batch=facts["global_batch"],
        learning_rate=args.learning_rate,
        scheduler=getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
        precision="bf16" if args.bf16 else "fp32",
        compiled=f"yes (torch.compile, {args.torch_compile_backend})" if args.torch_compile else "no",
        train_loss=f"{report.train_loss:.4f}",
        perplexity_before=f"{report.perplexity_before:.2f}",
        perplexity_after=f"{report.perplexity_after:.2f}",
        runtime=f"{facts['runtime']:.0f} s" if facts["runtime"] is not None else "n/a",
        curves=CURVES_FILE,
        hardware=hardware,
    )
