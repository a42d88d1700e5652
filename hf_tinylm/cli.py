"""The `tinylm` command (also `python -m hf_tinylm`): train, generate, info, demo and convert.

Errors a user can fix (missing files, bad values, a folder that is not TinyLM...) are raised by the commands as
ValueError or OSError and printed here as one line, `tinylm: error: <message>`, on stderr with exit status 1;
argparse usage errors exit with 2 and Ctrl-C with 130. Each command imports its own modules when it runs.
"""

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .conversion.command import add_parser as add_convert_parser

PROG = "tinylm"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _ctrl_c_recorded() as interrupted:
        try:
            result = args.func(args)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except (ValueError, OSError) as error:
            if interrupted:  # a library turned the KeyboardInterrupt into an error of its own
                print(f"{PROG}: interrupted", file=sys.stderr)
                return 130
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
    return result if isinstance(result, int) else 0


@contextmanager
def _ctrl_c_recorded() -> Iterator[list]:
    """Ctrl-C raises KeyboardInterrupt as usual, and is also recorded in the yielded list: some libraries (torch's
    storage code under safetensors, for one) catch the KeyboardInterrupt and raise another error instead."""
    received: list = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_sigint(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, inspect, convert and generate with TinyLM models (Hugging Face Transformers).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(subparsers)
    _add_generate(subparsers)
    _add_info(subparsers)
    _add_demo(subparsers)
    add_convert_parser(subparsers)
    return parser


def _version() -> str:
    try:
        return version("hf-tinylm")
    except PackageNotFoundError:
        return "unknown"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is one and the help text does not already describe it."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=34)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], "") or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


# ----------------------------------------------------------------------------------------------- train


def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="pre-train from a preset or config, or fine-tune a TinyLM folder, with Trainer",
        description=(
            "Pre-train a TinyLM from a preset or config.json, or fine-tune a TinyLM folder, with the Transformers "
            "Trainer. Text is tokenized, packed into blocks and split into training and held-out blocks; the "
            "held-out perplexity is reported before and after. Checkpoints go to --checkpoint-dir (default "
            "OUTPUT-checkpoints) for --resume; the final Hub-ready folder is written only when training "
            "succeeded. Runs under torchrun / accelerate launch for DDP or FSDP."
        ),
        formatter_class=_Formatter,
    )
    src = p.add_argument_group("model (one of; default --preset tiny)")
    src.add_argument("--model", metavar="FOLDER", help="fine-tune this TinyLM folder (weights, config, tokenizer)")
    src.add_argument("--preset", metavar="NAME", help="train from scratch with this preset (see `tinylm info`)")
    src.add_argument("--config", metavar="JSON", help="train from scratch with this TinyLM config.json")
    src.add_argument("--config-overrides", metavar="K=V,...",
                     help="change config fields of a new model, e.g. 'hidden_size=64,num_hidden_layers=2'")
    src.add_argument("--tokenizer", default="auto", metavar="{auto,bpe,byte,FOLDER}",
                     help="from scratch: 'bpe' trains a byte-level BPE on the data, 'byte' uses one token per byte, "
                          "'auto' picks byte for vocabularies of <= 257 and BPE otherwise; or a tokenizer folder")
    src.add_argument("--vocab-size", type=_positive_int, help="BPE vocabulary size (default: the preset's)")

    data = p.add_argument_group("data")
    data.add_argument("--data", nargs="+", default=[], metavar="PATH",
                      help="text (.txt, one row per line) or json/jsonl files, or folders searched recursively")
    data.add_argument("--glob", nargs="+", default=None, metavar="PATTERN",
                      help="file-name patterns to take from folders (default: *.txt *.text *.md *.rst *.json *.jsonl)")
    data.add_argument("--dataset", metavar="NAME", help="a `datasets` name or script (from the Hub when online)")
    data.add_argument("--dataset-config", metavar="NAME", help="configuration of --dataset")
    data.add_argument("--dataset-split", default="train", help="split of --dataset to train on")
    data.add_argument("--text-column", default="text", help="column (json key) holding the text")
    data.add_argument("--validation-data", nargs="+", default=[], metavar="PATH",
                      help="held-out files/folders (default: the last --validation-split of the training blocks)")
    data.add_argument("--validation-split", type=float, default=0.05, metavar="FRACTION",
                      help="share of the blocks held out for perplexity: the corpus's last blocks")
    data.add_argument("--block-size", type=_positive_int,
                      help="tokens per training block (default: the context, at most 1024)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides --epochs when > 0")
    opt.add_argument("--epochs", type=_positive_float, default=1.0)
    opt.add_argument("--batch-size", type=_positive_int, default=8, help="blocks per device per step")
    opt.add_argument("--eval-batch-size", type=_positive_int, help="default: --batch-size")
    opt.add_argument("--gradient-accumulation-steps", type=_positive_int, default=1)
    opt.add_argument("--learning-rate", type=_positive_float, help="default: 5e-4 from scratch, 5e-5 fine-tuning")
    opt.add_argument("--lr-scheduler", default="linear", help="Transformers scheduler name (linear, cosine, ...)")
    opt.add_argument("--warmup-steps", type=_non_negative_int, default=0)
    opt.add_argument("--weight-decay", type=_non_negative_float, default=0.0)
    opt.add_argument("--max-grad-norm", type=_non_negative_float, default=1.0, help="0: no clipping")
    opt.add_argument("--seed", type=int, default=42, help="seed of initialisation, data order and dropout")
    opt.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    opt.add_argument("--gradient-checkpointing", action="store_true",
                     help="recompute activations in the backward pass to save memory")

    out = p.add_argument_group("output and checkpoints")
    out.add_argument("--output", "-o", required=True, type=Path, metavar="FOLDER", help="the final model folder")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing output folder and start over in the checkpoint folder")
    out.add_argument("--checkpoint-dir", type=Path, metavar="FOLDER", help="default: OUTPUT-checkpoints")
    out.add_argument("--save-steps", type=_non_negative_int, default=500, help="checkpoint every N steps (0: never)")
    out.add_argument("--save-total-limit", type=_positive_int, default=2, help="checkpoints to keep")
    out.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                     help="continue from the latest complete checkpoint in --checkpoint-dir, or from CHECKPOINT")
    out.add_argument("--logging-steps", type=_positive_int, default=10)
    out.add_argument("--eval-steps", type=_positive_int, help="evaluate every N steps (default: before and after only)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")

    dist = p.add_argument_group("distributed (under torchrun / accelerate launch)")
    dist.add_argument("--ddp-backend", choices=["gloo", "nccl", "mpi", "xccl", "hccl"],
                      help="default: nccl on GPUs, gloo on CPU")
    dist.add_argument("--fsdp", default="", metavar="OPTIONS",
                      help="Trainer FSDP options, e.g. 'full_shard auto_wrap'")
    dist.add_argument("--fsdp-config", metavar="JSON", help="Trainer fsdp_config (a JSON file or string)")
    dist.add_argument("--dataloader-workers", type=_non_negative_int, default=0)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .training.data import DEFAULT_PATTERNS
    from .training.train import TrainSettings, parse_config_overrides, train

    settings = TrainSettings(
        output=args.output, data=args.data, glob=args.glob or list(DEFAULT_PATTERNS), dataset=args.dataset,
        dataset_config=args.dataset_config, dataset_split=args.dataset_split, text_column=args.text_column,
        validation_data=args.validation_data, validation_split=args.validation_split,
        model=args.model, preset=args.preset, config=args.config,
        config_overrides=parse_config_overrides(args.config_overrides), tokenizer=args.tokenizer,
        vocab_size=args.vocab_size, block_size=args.block_size, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        lr_scheduler=args.lr_scheduler, max_grad_norm=args.max_grad_norm, epochs=args.epochs,
        max_steps=args.max_steps, seed=args.seed, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        logging_steps=args.logging_steps, eval_steps=args.eval_steps, save_steps=args.save_steps,
        save_total_limit=args.save_total_limit, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        overwrite=args.overwrite, ddp_backend=args.ddp_backend, fsdp=args.fsdp, fsdp_config=args.fsdp_config,
        dataloader_workers=args.dataloader_workers, progress=not args.no_progress,
    )
    report = train(settings)
    if _is_main_process():
        print(f"held-out perplexity: {report.perplexity_before:.2f} before -> {report.perplexity_after:.2f} after "
              f"({report.steps} steps, {report.tokens_seen:,} tokens, final train loss {report.train_loss:.4f})")
        print(f"saved {report.output}")
    return 0


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------------------------- generate


def _add_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text with a TinyLM folder through pipeline('text-generation')",
        description=(
            "Continue PROMPT with the model in MODEL (a folder with weights and tokenizer) through "
            "pipeline('text-generation'), streaming tokens as they come. Decoding defaults come from the model's "
            "generation_config.json; the flags override them."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("model", metavar="MODEL", help="TinyLM model folder")
    p.add_argument("prompt", nargs="+", metavar="PROMPT", help="the prompt (several words are joined by spaces)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="greedy decoding")
    mode.add_argument("--sample", action="store_true", help="sampling (implied by --temperature/--top-k/--top-p)")
    p.add_argument("--temperature", type=_positive_float, help="sampling temperature (> 0; use --greedy for 0)")
    p.add_argument("--top-k", type=_non_negative_int, help="sample from the K most likely tokens (0: all)")
    p.add_argument("--top-p", type=_probability, help="nucleus sampling: likeliest tokens up to this mass")
    p.add_argument("--num-beams", type=_positive_int, help="beam search with N beams (output is not streamed)")
    p.add_argument("--repetition-penalty", type=_positive_float, help="> 1 discourages repeats, 1 disables")
    p.add_argument("--max-new-tokens", type=_positive_int, help="default: the generation config's, else 50")
    p.add_argument("--seed", type=int, help="seed for sampling, for reproducible output")
    p.add_argument("--no-stream", action="store_true", help="print the text once it is complete")
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from .generation import GenerateOptions, generate

    options = GenerateOptions(
        greedy=args.greedy, sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        num_beams=args.num_beams, repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
        seed=args.seed, stream=not args.no_stream,
    )
    generate(args.model, " ".join(args.prompt), options)
    return 0


# ----------------------------------------------------------------------------------------------- info


def _add_info(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="architecture and parameter counts of a TinyLM folder or preset",
        description=(
            "Show the architecture of a TinyLM model folder or preset on one screen, with parameter counts (tied "
            "weights counted once) broken down into embeddings, each block, final norm and head. Without an "
            "argument, list the presets."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("target", nargs="?", metavar="MODEL_OR_PRESET", help="model folder or preset name")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    from .info import describe, list_presets

    print(describe(args.target, as_json=args.json) if args.target else list_presets(as_json=args.json))
    return 0


# ----------------------------------------------------------------------------------------------- demo


def _add_demo(subparsers) -> None:
    from .training.demo import DEFAULTS

    p = subparsers.add_parser(
        "demo",
        help="train a small TinyLM from scratch offline, reload it and generate (a few minutes on a CPU)",
        description=(
            "The main job end to end, offline: train a small TinyLM from scratch (BPE tokenizer trained on the "
            "text) on Python's own standard-library sources (or --text), show loss and held-out perplexity "
            "falling, save the Hub-ready folder, reload it in a fresh process with "
            "AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True) and generate a sample through "
            "pipeline. An existing output folder is replaced only if it holds a TinyLM model (an earlier demo) "
            "or with --overwrite."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("--output", "-o", type=Path, default=Path(DEFAULTS.output), metavar="FOLDER")
    p.add_argument("--text", nargs="+", metavar="PATH",
                   help="train on these files/folders instead of the standard library's *.py files")
    p.add_argument("--max-bytes", type=_positive_int, default=DEFAULTS.max_bytes,
                   help="read at most this much text")
    p.add_argument("--steps", type=_positive_int, default=DEFAULTS.steps)
    p.add_argument("--prompt", default=DEFAULTS.prompt)
    p.add_argument("--max-new-tokens", type=_positive_int, default=DEFAULTS.max_new_tokens)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--overwrite", action="store_true", help="replace the output folder whatever it holds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .training.demo import DemoSettings, run_demo

    run_demo(DemoSettings(output=str(args.output), text=args.text, max_bytes=args.max_bytes, steps=args.steps,
                          prompt=args.prompt, max_new_tokens=args.max_new_tokens, seed=args.seed,
                          overwrite=args.overwrite, progress=not args.no_progress))
    return 0
