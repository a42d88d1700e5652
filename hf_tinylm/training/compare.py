"""`tinylm compare`: train architecture variants on the same data, tokenizer, token budget and seed, then report how
they compare: a Markdown table and a plot of held-out loss against tokens seen.

The comparison folder:

    plan.json            what is compared, and how (a resumed comparison must ask for the same)
    tokenizer/           the one tokenizer every variant trains with
    configs/NAME.json    each variant's config
    variants/NAME/       each variant's model folder, written by `tinylm train`: complete, or absent
    checkpoints/NAME/    a variant's Trainer checkpoints while it trains (with --save-steps)
    comparison.md        the report, with comparison.png beside it and the numbers in comparison.json

Each variant trains in a process of its own (so the peak memory measured is its own); a resumed comparison trains
only the variants whose model folder is missing. Every file is written aside and moved into place when complete.
"""

import itertools
import json
import math
import multiprocessing
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GenerationConfig, TrainerCallback

from ..configuration_tinylm import PRESETS, TinyLMConfig
from ..info import parameter_breakdown
from ..model_folder import read_tinylm_config
from ..output_folder import atomic_output_folder
from ..terminal import library_output
from . import data as data_lib
from .curves import held_out_points, plot_comparison
from .settings import TOKENIZER_KINDS, CompareSettings, TrainSettings
from .tokenizer import load_tokenizer
from .train import checkpoint_problem, make_tokenizer, perplexity, train

PARAMETER_TOLERANCE = 0.01  # --params-matched: each variant within 1% of the first variant's parameter count
PLAN, REPORT, PLOT, RESULTS = "plan.json", "comparison.md", "comparison.png", "comparison.json"
DECODE_REPEATS = 3


@dataclass
class Variant:
    name: str
    config: TinyLMConfig
    description: str  # what makes it this variant, e.g. "preset `small`" or "norm_type=rmsnorm"


def compare(s: CompareSettings) -> dict:
    """Run `tinylm compare`; returns the report's numbers (also in comparison.json). Bad settings raise
    ValueError/OSError before anything is written."""
    output = Path(s.output)
    files = data_lib.resolve_data_files(s.data, s.glob)
    variants = variants_to_compare(s)
    steps = s.tokens // (s.batch_size * s.block_size)
    if steps == 0:
        raise ValueError(f"--tokens {s.tokens:,} is less than one step of {s.batch_size} x {s.block_size} tokens.")
    for variant in variants:
        if variant.config.context_limit is not None and s.block_size > variant.config.context_limit:
            raise ValueError(f"--block-size {s.block_size} exceeds the context of variant {variant.name} "
                             f"({variant.config.context_limit} positions).")
    plan = _plan(s, files, variants, steps)
    _start_or_resume(output, plan, s.resume, s.overwrite)

    tokenizer_folder = output / "tokenizer"
    if tokenizer_folder.is_dir():
        tokenizer = load_tokenizer(tokenizer_folder)
    elif s.tokenizer in TOKENIZER_KINDS:  # trained on the data (or byte-level) and saved in `tokenizer_folder`
        raw = data_lib.load_text_dataset(files)
        vocab_size = s.vocab_size or variants[0].config.vocab_size
        tokenizer, _ = make_tokenizer(s.tokenizer, None, raw, output, None, True, vocab_size, s.show_progress)
    else:
        tokenizer = load_tokenizer(s.tokenizer)
        with atomic_output_folder(tokenizer_folder) as staging:
            tokenizer.save_pretrained(str(staging))
    variants = [Variant(v.name, v.config.with_overrides(vocab_size=len(tokenizer)), v.description) for v in variants]
    matching = match_parameters(variants) if s.params_matched else []
    if matching:
        variants = [Variant(v.name, config, v.description) for v, (config, _) in zip(variants, matching)]
    for variant in variants:
        _write_atomically(output / "configs" / f"{variant.name}.json", variant.config.to_json_string())

    _train_variants(s, output, files, variants, steps)
    with library_output(progress=False, quiet=True):
        results = [_measure(output / "variants" / v.name, v, s.decode_tokens) for v in variants]
    report = dict(setup=_setup(s, files, tokenizer, steps), variants=results,
                  parameter_matching=[note for _, note in matching])
    _write_report(output, report)
    return report


# ----------------------------------------------------------------------------------------------- the variants


def variants_to_compare(s: CompareSettings) -> list[Variant]:
    """The variants asked for: each of --variants, or --base changed by --vary (crossed, or one field at a time)."""
    if s.variants and (s.base or s.vary):
        raise ValueError("Give --variants, or --base with --vary, not both.")
    if s.variants:
        variants = []
        for spec in s.variants:
            config, description = _config_from(spec)
            variants.append(Variant(_name_of(spec), config.with_overrides(**s.config_overrides), description))
    elif s.base and s.vary:
        if s.params_matched and "intermediate_size" in s.vary:
            raise ValueError("--params-matched sets intermediate_size itself; it cannot also be in --vary.")
        base, base_description = _config_from(s.base)
        base = base.with_overrides(**s.config_overrides)
        if s.one_at_a_time:
            changes = [{}] + [{field: value} for field, values in s.vary.items() for value in values
                              if value != getattr(base, field)]
        else:
            changes = [dict(zip(s.vary, values)) for values in itertools.product(*s.vary.values())]
        names = ["-".join(str(value) for value in change.values()) or "base" for change in changes]
        if len(set(names)) < len(names):  # the same value in two fields: name the fields too
            names = [",".join(f"{field}={value}" for field, value in change.items()) or "base" for change in changes]
        variants = [
            Variant(_folder_name(name), base.with_overrides(**change),
                    ", ".join(f"{field}={value}" for field, value in change.items()) or f"the base, {base_description}")
            for name, change in zip(names, changes)
        ]
    else:
        raise ValueError("Nothing to compare: give --variants PRESET_OR_CONFIG..., or --base with --vary FIELD=V1,V2.")
    names = [variant.name for variant in variants]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Two variants would be named {', '.join(repeated)}; each variant must differ.")
    if len(variants) < 2:
        raise ValueError(f"Only one variant ({names[0]}) to compare; give at least two.")
    return variants


def _config_from(spec: str) -> tuple[TinyLMConfig, str]:
    """A preset's config, a config.json file's, or a model folder's, and how the report names it."""
    path = Path(spec)
    if path.is_file():
        return TinyLMConfig.from_json_file(str(path)), f"config `{path}`"
    if (path / "config.json").is_file():
        return read_tinylm_config(path), f"the architecture of `{path}`"
    if spec in PRESETS:
        return TinyLMConfig.from_preset(spec), f"preset `{spec}`"
    raise ValueError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json file or model folder.")


def _name_of(spec: str) -> str:
    path = Path(spec)
    if spec in PRESETS and not path.exists():
        return spec
    return _folder_name(path.parent.name if path.name == "config.json" else path.stem if path.is_file() else path.name)


def _folder_name(name: str) -> str:
    return re.sub(r"[^\w.=,+-]+", "_", name)


def match_parameters(variants: list[Variant]) -> list[tuple[TinyLMConfig, str]]:
    """Each variant's config with its MLP width (intermediate_size) set so that its parameter count is within
    `PARAMETER_TOLERANCE` of the first variant's, and a line saying what changed. Parameters grow linearly with the
    width, so two counts give the width to use."""
    target = parameter_count(variants[0].config)
    matched = [(variants[0].config, f"{variants[0].name}: the reference, {target:,} parameters")]
    for variant in variants[1:]:
        config = variant.config
        count = parameter_count(config)
        per_unit = parameter_count(config.with_overrides(intermediate_size=config.intermediate_size + 1)) - count
        width = round(config.intermediate_size + (target - count) / per_unit)
        if width < 1:
            raise ValueError(f"--params-matched: variant {variant.name} has {count:,} parameters before its MLP, "
                             f"more than the reference's {target:,}; no MLP width can match them.")
        new = config.with_overrides(intermediate_size=width)
        new_count = parameter_count(new)
        if abs(new_count - target) > PARAMETER_TOLERANCE * target:
            raise ValueError(f"--params-matched: the nearest MLP width of variant {variant.name} gives {new_count:,} "
                             f"parameters, not within {PARAMETER_TOLERANCE:.0%} of {target:,}.")
        matched.append((new, f"{variant.name}: intermediate_size {config.intermediate_size} -> {width}, "
                             f"{count:,} -> {new_count:,} parameters ({(new_count - target) / target:+.2%})"))
    return matched


def parameter_count(config: TinyLMConfig) -> int:
    """Parameters of a model of `config`, tied weights counted once (built on the meta device: no memory)."""
    return parameter_breakdown(config)["total"]


# ----------------------------------------------------------------------------------------------- the folder


def _plan(s: CompareSettings, files: list[Path], variants: list[Variant], steps: int) -> dict:
    """Everything that decides the results; a resumed comparison must have the same."""
    return dict(
        data=[str(path.resolve()) for path in files], validation_split=s.validation_split, tokenizer=s.tokenizer,
        vocab_size=s.vocab_size, steps=steps, block_size=s.block_size, batch_size=s.batch_size,
        learning_rate=s.learning_rate, lr_scheduler=s.lr_scheduler, warmup_steps=_warmup(s, steps),
        evaluations=s.evaluations, seed=s.seed, params_matched=s.params_matched,
        variants={variant.name: variant.config.to_dict() for variant in variants},
    )


def _start_or_resume(output: Path, plan: dict, resume: bool, overwrite: bool) -> None:
    """Create the comparison folder with its plan; or, with `resume`, check that the existing one has the same plan;
    with `overwrite`, delete an earlier comparison first (never a folder that is not one)."""
    plan_text = json.dumps(plan, indent=2, sort_keys=True) + "\n"
    if output.exists():
        if not (output / PLAN).is_file():
            raise FileExistsError(f"{output} exists and is not a comparison folder (it has no {PLAN}).")
        if overwrite:
            shutil.rmtree(output)
        elif not resume:
            raise FileExistsError(f"{output} holds a comparison already: pass --resume to continue it, or "
                                  "--overwrite to start over.")
        else:
            asked, started = json.loads(plan_text), json.loads((output / PLAN).read_text())
            different = sorted(key for key in {*asked, *started} if asked.get(key) != started.get(key))
            if different:
                raise ValueError(f"--resume: {output} was started with other settings ({', '.join(different)} "
                                 "differ); give the same ones, or --overwrite to start over.")
            return
    elif resume:
        raise FileNotFoundError(f"--resume: no comparison in {output}.")
    _write_atomically(output / PLAN, plan_text)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _warmup(s: CompareSettings, steps: int) -> int:
    return s.warmup_steps if s.warmup_steps is not None else steps // 10


def _is_finished(folder: Path) -> bool:
    """`tinylm train` moves a model folder into place only when complete, all_results.json included."""
    return (folder / "all_results.json").is_file()


# ----------------------------------------------------------------------------------------------- training


def _train_variants(s: CompareSettings, output: Path, files: list[Path], variants: list[Variant],
                    steps: int) -> None:
    """Train each variant not finished yet, one after another, each in a process of its own, with one progress bar
    over all the steps left."""
    todo = {v.name for v in variants if not _is_finished(output / "variants" / v.name)}
    progress = _Progress(steps * len(todo), bar=s.show_progress, log=not s.quiet)
    eval_steps = math.ceil(steps / s.evaluations)
    try:
        for index, variant in enumerate(variants, 1):
            label = f"[{index}/{len(variants)}] {variant.name}"
            if variant.name not in todo:
                progress.say(f"{label}: finished earlier, not trained again")
                continue
            checkpoints = output / "checkpoints" / variant.name
            resume = s.resume and any(checkpoint_problem(c) is None for c in checkpoints.glob("checkpoint-*"))
            progress.start(label, f"{parameter_count(variant.config):,} parameters, {steps} steps"
                                  + (", resuming from its last checkpoint" if resume else ""))
            settings = TrainSettings(
                output=output / "variants" / variant.name, config=str(output / "configs" / f"{variant.name}.json"),
                tokenizer=str(output / "tokenizer"), data=[str(path) for path in files],
                data_description=", ".join(f"`{path}`" for path in s.data), validation_split=s.validation_split,
                block_size=s.block_size, batch_size=s.batch_size, max_steps=steps, learning_rate=s.learning_rate,
                lr_scheduler=s.lr_scheduler, warmup_steps=_warmup(s, steps), eval_steps=eval_steps,
                logging_steps=eval_steps, save_steps=s.save_steps, checkpoint_dir=checkpoints,
                resume="latest" if resume else None, overwrite=True, seed=s.seed, progress=False, quiet=True,
            )
            _train_in_own_process(settings, progress)
            if not _is_finished(settings.output):
                raise ValueError(f"Training the variant {variant.name} stopped before it finished.")
            results = json.loads((settings.output / "all_results.json").read_text())
            progress.say(f"{label}: held-out perplexity {results['perplexity_after']:.2f}, "
                         f"{results['train_tokens_per_second']:,.0f} training tokens/s")
    finally:
        progress.close()
    shutil.rmtree(output / "checkpoints", ignore_errors=True)  # each finished variant deleted its own


class _Progress:
    """The comparison's progress: one bar over every step still to train, and a line per variant and evaluation."""

    def __init__(self, total_steps: int, bar: bool, log: bool):
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True) if bar and total_steps else None
        self.log = log
        self.label, self.step = "", 0

    def start(self, label: str, what: str) -> None:
        self.label, self.step = label, 0
        if self.bar is not None:
            self.bar.set_description(label)
        self.say(f"{label}: training, {what}")

    def reached(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.step)
        self.step = step

    def say(self, line: str) -> None:
        if self.log:
            self.bar.write(line) if self.bar is not None else print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _ReportToParent(TrainerCallback):
    """In a variant's training process: sends its steps and held-out losses to the comparison's process."""

    def __init__(self, messages):
        self.messages = messages

    def on_train_begin(self, args, state, control, **kwargs):
        self.messages.put(("step", state.global_step))

    on_step_end = on_train_begin

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_loss" in logs:
            self.messages.put(("eval", state.global_step, state.max_steps, logs["eval_loss"]))


def _train_variant(settings: TrainSettings, messages) -> None:
    """The body of a variant's training process: failures go to the parent as one line."""
    try:
        with library_output(progress=False, quiet=True):
            train(settings, callbacks=[_ReportToParent(messages)])
    except KeyboardInterrupt:
        pass  # `train` has removed what it started; the parent sees the model folder missing
    except Exception as error:  # any failure: the parent reports it
        messages.put(("error", f"{type(error).__name__}: {error}"))


def _train_in_own_process(settings: TrainSettings, progress: _Progress) -> None:
    """Run `train(settings)` in a new process, showing its progress; Ctrl-C here stops it cleanly first."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    process = context.Process(target=_train_variant, args=(settings, messages))
    process.start()
    try:
        while True:
            try:
                message = messages.get(timeout=0.2)
            except queue.Empty:
                if process.is_alive():
                    continue
                try:
                    message = messages.get(timeout=1)
                except queue.Empty:
                    break
            if message[0] == "step":
                progress.reached(message[1])
            elif message[0] == "eval":
                _, step, max_steps, loss = message
                progress.say(f"{progress.label}  step {step:>{len(str(max_steps))}}/{max_steps}  held-out loss "
                             f"{loss:.4f}  perplexity {perplexity(loss):.2f}")
            else:
                raise ValueError(f"{progress.label}: {message[1]}")
    except BaseException:
        process.join(timeout=5)  # after Ctrl-C in a terminal the child got it too, and is cleaning up
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
            process.join()
        raise
    process.join()


# ----------------------------------------------------------------------------------------------- measuring


def _measure(folder: Path, variant: Variant, decode_tokens: int) -> dict:
    """A finished variant's numbers: from its folder, plus its decoding speed measured now."""
    results = json.loads((folder / "all_results.json").read_text())
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    held_out = held_out_points(history)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return dict(
        name=variant.name, description=variant.description, folder=str(folder),
        parameters=sum(p.numel() for p in model.parameters()), tokens_seen=results["tokens_seen"],
        held_out_loss=held_out[-1][1], held_out_perplexity=results["perplexity_after"],
        train_tokens_per_second=results["train_tokens_per_second"], peak_memory_mb=results["peak_memory_mb"],
        decode_tokens_per_second=decode_speed(model, decode_tokens), held_out_curve=held_out,
    )


def decode_speed(model, new_tokens: int) -> float:
    """Tokens per second of greedy decoding with the KV cache, one sequence of `new_tokens` (fewer if the context
    is shorter) from a one-token prompt: the median of `DECODE_REPEATS` runs after a warm-up."""
    limit = model.config.context_limit
    new_tokens = min(new_tokens, limit - 1) if limit else new_tokens
    eos = model.config.eos_token_id
    model.eval()
    model.generation_config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                               eos_token_id=eos, pad_token_id=eos)
    prompt = torch.tensor([[eos if eos is not None else 0]])
    seconds = []
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=2, min_new_tokens=2)
        for _ in range(DECODE_REPEATS):
            start = time.perf_counter()
            model.generate(prompt)
            seconds.append(time.perf_counter() - start)
    return new_tokens / statistics.median(seconds)


# ----------------------------------------------------------------------------------------------- the report


def _setup(s: CompareSettings, files: list[Path], tokenizer, steps: int) -> dict:
    tokens = steps * s.batch_size * s.block_size
    return dict(
        data=", ".join(f"`{path}`" for path in s.data), files=len(files), validation_split=s.validation_split,
        tokenizer=f"{len(tokenizer):,} tokens ({s.tokenizer}), in `tokenizer/`", tokens=tokens, steps=steps,
        batch_size=s.batch_size, block_size=s.block_size, learning_rate=s.learning_rate, lr_scheduler=s.lr_scheduler,
        warmup_steps=_warmup(s, steps), seed=s.seed, overrides=s.config_overrides, decode_tokens=s.decode_tokens,
        hardware=f"{platform.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
                 f"{'CUDA' if torch.cuda.is_available() else 'CPU'}",
    )


def _write_report(output: Path, report: dict) -> None:
    plot_comparison({v["name"]: v["held_out_curve"] for v in report["variants"]}, output / f".{PLOT}.partial",
                    "Held-out loss against tokens seen (same data, tokenizer, budget, seed)")
    _write_atomically(output / RESULTS, json.dumps(report, indent=2) + "\n")
    _write_atomically(output / REPORT, markdown_report(report))
    os.replace(output / f".{PLOT}.partial", output / PLOT)


def results_table(variants: list[dict]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| variant | parameters | tokens seen | held-out loss | held-out perplexity | training tokens/s "
             "| peak memory | decode tokens/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for v in variants:
        memory = f"{v['peak_memory_mb']:,.0f} MB" if v["peak_memory_mb"] is not None else "n/a"
        lines.append(f"| {v['name']} | {v['parameters']:,} | {v['tokens_seen']:,} | {v['held_out_loss']:.4f} "
                     f"| {v['held_out_perplexity']:.2f} | {v['train_tokens_per_second']:,.0f} | {memory} "
                     f"| {v['decode_tokens_per_second']:,.0f} |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    setup, variants = report["setup"], report["variants"]
    best = min(variants, key=lambda v: v["held_out_loss"])
    lines = [
        "# Architecture comparison",
        "",
        f"{len(variants)} TinyLM variants trained by `tinylm compare` on the same data, tokenizer, token budget "
        "and seed. Each variant's model folder is in `variants/`.",
        "",
        results_table(variants),
        "",
        f"![Held-out loss against tokens seen]({PLOT})",
        "",
        "## Variants",
        "",
        *[f"- **{v['name']}**: {v['description']}" for v in variants],
        *(["", "Parameters matched by the MLP width (`--params-matched`):", "",
           *[f"- {note}" for note in report["parameter_matching"]]] if report["parameter_matching"] else []),
        "",
        "## Setup",
        "",
        f"- data: {setup['data']} ({setup['files']} file{'s' if setup['files'] != 1 else ''}); the last {setup['validation_split']:.1%} of the token "
        "blocks held out",
        f"- tokenizer: {setup['tokenizer']}",
        f"- budget: {setup['tokens']:,} tokens each = {setup['steps']} steps x {setup['batch_size']} blocks x "
        f"{setup['block_size']} tokens; AdamW, learning rate {setup['learning_rate']}, {setup['lr_scheduler']} "
        f"schedule, {setup['warmup_steps']} warm-up steps; seed {setup['seed']}",
        *([f"- set in every variant: {', '.join(f'{k}={v}' for k, v in setup['overrides'].items())}"]
          if setup["overrides"] else []),
        f"- hardware: {setup['hardware']}",
        "",
        "## Reading the numbers",
        "",
        f"Lowest held-out loss: **{best['name']}** ({best['held_out_loss']:.4f}). Held-out loss is the mean "
        "cross-entropy (nats per token) on the held-out blocks, with the same tokenizer for every variant, so it "
        "compares across them; perplexity is its exponential. This is one seed and one short budget: differences "
        "of a few hundredths of a nat may change with another seed, and the ranking after a short run need not "
        "hold for longer training or larger models.",
        "",
        "Training tokens/s counts only the time in training steps (no evaluation or saving). Peak memory is "
        "that of the variant's own training process: on a CPU its peak resident memory (Python, libraries and "
        "data included), on a GPU what torch allocated. Decode tokens/s is greedy decoding with the KV cache, one "
        f"sequence of {setup['decode_tokens']} new tokens, median of {DECODE_REPEATS} runs. Variants ran one after "
        "another on this machine: speeds compare within this report, not with other machines.",
        "",
    ]
    return "\n".join(lines)
