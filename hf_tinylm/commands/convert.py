"""`tinylm convert`: any registered checkpoint format to TinyLM, and TinyLM to any writable one."""

import dataclasses

from ..conversion.convert import DEFAULT_MAX_SHARD_SIZE, DEFAULT_TARGET, DTYPES
from ..conversion.formats import FORMATS, writable_formats
from ..flags import option
from ..terminal import OutputOptions

HELP = "convert GPT-2, OpenAI TF, nanoGPT and Llama checkpoints to TinyLM, or TinyLM to GPT-2, Llama or GGUF"
DESCRIPTION = (
    "Convert a checkpoint to a Hub-ready TinyLM folder, or (--to FORMAT) to another format, checking the logits of "
    "what was written against the source's own model. SOURCE is a path or a Hugging Face Hub repo id (e.g. "
    "openai-community/gpt2; with HF_HUB_OFFLINE=1 it is read from the local Hub cache); its format is detected: "
    + "; ".join(format.signature for format in FORMATS.values() if format.signature)
    + ". A folder OUTPUT gets the weights, config, generation config, tokenizer and a README.md model card with the "
    "measured parity; --to gguf writes one file. Output is written aside and moved into place only when complete."
)


@dataclasses.dataclass(kw_only=True)
class ConvertSettings(OutputOptions):
    source: str = option(positional=True, metavar="SOURCE", help="checkpoint folder or file, or Hub repo id")
    output: str = option(positional=True, metavar="OUTPUT", help="folder (or, for --to gguf, file) to create")
    to: str = option(DEFAULT_TARGET, choices=writable_formats(),
                     help="target format (anything but tinylm exports a TinyLM checkpoint)")
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
