"""The `tinylm convert` command: `add_parser` plugs it into the `tinylm` CLI, `main` runs it standalone."""

import argparse
import sys

from .convert import DEFAULT_MAX_SHARD_SIZE, DTYPES, ConversionResult, convert

DESCRIPTION = """\
Convert a GPT-2 checkpoint to a Hub-ready TinyLM folder, or (--to gpt2) a TinyLM checkpoint back to a standard
Transformers GPT-2 folder. SOURCE is a folder or a Hugging Face Hub repo id (e.g. openai-community/gpt2; with
HF_HUB_OFFLINE=1 it is read from the local Hub cache); its format is detected: a Transformers GPT-2 checkpoint
(safetensors or pytorch_model.bin, sharded or not), OpenAI's original TensorFlow release folder (hparams.json,
model.ckpt.*, encoder.json, vocab.bpe; TensorFlow not needed), or a TinyLM checkpoint (for --to gpt2). OUTPUT gets
the weights, config, generation config, tokenizer and a README.md model card with the logits parity measured
during the conversion; it is written to a temporary folder and moved into place only when complete."""


def add_arguments(parser: argparse.ArgumentParser, fixed_target: str | None = None) -> None:
    parser.add_argument("source", metavar="SOURCE", help="checkpoint folder or Hub repo id")
    parser.add_argument("output", metavar="OUTPUT", help="folder to create")
    if fixed_target is None:
        parser.add_argument(
            "--to", choices=("tinylm", "gpt2"), default="tinylm",
            help="target format (default: tinylm; gpt2 exports a TinyLM checkpoint to Transformers GPT-2)",
        )  # fmt: skip
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="dtype of the saved weights (default: the source's)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument(
        "--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE,
        help=f"split the weights into safetensors shards of at most this size (default: {DEFAULT_MAX_SHARD_SIZE})",
    )  # fmt: skip
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit of SOURCE (default: main)")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face Hub cache folder (default: HF_HUB_CACHE)")
    parser.add_argument("--base-model", default=None, help="`base_model` of the card (default: SOURCE's Hub id)")
    parser.add_argument("--license", default=None, help="`license` of the card (default: the source card's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `convert` subcommand to the `tinylm` CLI's subparsers."""
    parser = subparsers.add_parser(
        "convert",
        help="convert GPT-2 (Transformers or OpenAI TF) to TinyLM, or TinyLM back to GPT-2",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed `convert` command; errors propagate (ValueError / OSError) for the CLI to report."""
    result = convert(
        args.source,
        args.output,
        to=args.to,
        dtype=args.dtype,
        overwrite=args.overwrite,
        revision=args.revision,
        cache_dir=args.cache_dir,
        max_shard_size=args.max_shard_size,
        base_model=args.base_model,
        license=args.license,
        progress=not args.no_progress,
    )
    print(summary(result))
    return 0


def summary(result: ConversionResult) -> str:
    lines = [
        f"Wrote {result.output} ({result.target}, {result.dtype}, {result.num_parameters:,} parameters) "
        f"from a {result.source_format} checkpoint.",
        f"Logits parity (saved model vs source, fixed batch): max |Δlogits| = {result.max_abs_logits_diff:.3g}",
    ]
    return "\n".join(lines + [f"Note: {note}" for note in result.notes])


def main(argv: list[str] | None = None, *, to: str | None = None, prog: str | None = None) -> int:
    """Standalone entry point (for `scripts/convert/*.py`); `to` fixes the target and hides `--to`.

    Errors print `tinylm: error: <message>` to stderr and return 1, as the `tinylm` CLI does.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, fixed_target=to)
    args = parser.parse_args(argv)
    if to is not None:
        args.to = to
    try:
        return run(args)
    except (ValueError, OSError) as error:
        print(f"tinylm: error: {error}", file=sys.stderr)
        return 1
