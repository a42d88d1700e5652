"""`tinylm convert`: GPT-2 checkpoints (Transformers or OpenAI's TensorFlow release) to TinyLM, and back."""

import dataclasses

from ..conversion.convert import DEFAULT_MAX_SHARD_SIZE, DTYPES
from ..flags import option
from ..terminal import OutputOptions

HELP = "convert GPT-2 (Transformers or OpenAI TF) to TinyLM, or TinyLM back to GPT-2"
DESCRIPTION = (
    "Convert a GPT-2 checkpoint to a Hub-ready TinyLM folder, or (--to gpt2) a TinyLM checkpoint back to a standard "
    "Transformers GPT-2 folder. SOURCE is a folder or a Hugging Face Hub repo id (e.g. openai-community/gpt2; with "
    "HF_HUB_OFFLINE=1 it is read from the local Hub cache); its format is detected: a Transformers GPT-2 checkpoint "
    "(safetensors or pytorch_model.bin, sharded or not), OpenAI's original TensorFlow release folder (hparams.json, "
    "model.ckpt.*, encoder.json, vocab.bpe; TensorFlow not needed), or a TinyLM checkpoint (for --to gpt2). OUTPUT "
    "gets the weights, config, generation config, tokenizer and a README.md model card with the logits parity "
    "measured during the conversion; it is written to a temporary folder and moved into place only when complete."
)


@dataclasses.dataclass(kw_only=True)
class ConvertSettings(OutputOptions):
    source: str = option(positional=True, metavar="SOURCE", help="checkpoint folder or Hub repo id")
    output: str = option(positional=True, metavar="OUTPUT", help="folder to create")
    to: str = option("tinylm", choices=("tinylm", "gpt2"),
                     help="target format (gpt2 exports a TinyLM checkpoint to Transformers GPT-2)")
    dtype: str | None = option(None, choices=tuple(DTYPES), help="dtype of the saved weights (default: the source's)")
    overwrite: bool = option(False, help="replace OUTPUT if it exists")
    max_shard_size: str = option(DEFAULT_MAX_SHARD_SIZE,
                                 help="split the weights into safetensors shards of at most this size")
    revision: str | None = option(None, help="Hub branch, tag or commit of SOURCE (default: main)")
    cache_dir: str | None = option(None, help="Hugging Face Hub cache folder (default: HF_HUB_CACHE)")
    base_model: str | None = option(None, help="`base_model` of the card (default: SOURCE's Hub id)")
    license: str | None = option(None, help="`license` of the card (default: the source card's)")


SETTINGS = ConvertSettings


def run(settings: ConvertSettings) -> int:
    from ..conversion.convert import convert

    output_flags = {field.name for field in dataclasses.fields(OutputOptions)}
    options = {name: value for name, value in dataclasses.asdict(settings).items() if name not in output_flags}
    result = convert(**options, progress=settings.show_progress)
    print(f"Wrote {result.output} ({result.target}, {result.dtype}, {result.num_parameters:,} parameters) from a "
          f"{result.source_format} checkpoint.")
    print(f"Logits parity (saved model vs source, fixed batch): max |Δlogits| = {result.max_abs_logits_diff:.3g}")
    for note in result.notes:
        print(f"Note: {note}")
    return 0
