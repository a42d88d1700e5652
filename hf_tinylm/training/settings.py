"""The settings of `tinylm train`: each field is both the Python setting and its command-line flag."""

import dataclasses
import json
from pathlib import Path
from typing import Any

from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

from ..configuration_tinylm import TinyLMConfig
from ..flags import non_negative_float, non_negative_int, option, positive_float, positive_int
from ..terminal import OutputOptions

DEFAULT_PATTERNS = ("*.txt", "*.text", "*.md", "*.rst", "*.json", "*.jsonl")
TOKENIZER_KINDS = ("auto", "bpe", "byte")
LOGGERS = ("none", "all", *INTEGRATION_TO_CALLBACK)  # Trainer's `report_to` names

MODEL = "model (one of; default --preset tiny)"
DATA = "data"
OPTIMISATION = "optimisation"
OUTPUT = "output and checkpoints"
DISTRIBUTED = "distributed (under torchrun / accelerate launch)"


def parse_config_overrides(text: str) -> dict[str, Any]:
    """`"hidden_size=64,num_hidden_layers=2,residual_dropout=0.1"` -> dict; values are JSON, else strings."""
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config-overrides wants key=value pairs separated by commas, got {item!r}.")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(TinyLMConfig)})
    if unknown:
        raise ValueError(f"Unknown config field(s) in --config-overrides: {', '.join(unknown)}.")
    return overrides


@dataclasses.dataclass(kw_only=True)
class TrainSettings(OutputOptions):
    """Everything `tinylm train` needs; the defaults are the command's defaults."""

    # model: at most one of `model` (fine-tune a folder), `preset` or `config` (a config.json); default preset tiny
    model: str | None = option(None, metavar="FOLDER", group=MODEL,
                               help="fine-tune this TinyLM folder (weights, config, tokenizer)")
    preset: str | None = option(None, metavar="NAME", group=MODEL,
                                help="train from scratch with this preset (see `tinylm info`)")
    config: str | None = option(None, metavar="JSON", group=MODEL,
                                help="train from scratch with this TinyLM config.json")
    config_overrides: dict[str, Any] = option(
        {}, metavar="K=V,...", group=MODEL, parse=parse_config_overrides,
        help="change config fields of a new model, e.g. 'hidden_size=64,num_hidden_layers=2'; sizes derived from "
             "others (head_dim, intermediate_size, num_key_value_heads) follow unless set themselves")
    tokenizer: str = option("auto", metavar="{auto,bpe,byte,FOLDER}", group=MODEL,
                            help="from scratch: 'bpe' trains a byte-level BPE on the data, 'byte' uses one token per "
                                 "byte, 'auto' picks byte for vocabularies of <= 257 and BPE otherwise; or a tokenizer "
                                 "folder")
    vocab_size: int | None = option(None, type=positive_int, group=MODEL,
                                    help="BPE vocabulary size (default: the config's)")

    data: list[str] = option([], nargs="+", metavar="PATH", group=DATA,
                             help="text (.txt, one row per line) or json/jsonl files, or folders searched recursively")
    glob: list[str] = option(list(DEFAULT_PATTERNS), nargs="+", metavar="PATTERN", group=DATA,
                             help="file-name patterns to take from folders")
    dataset: str | None = option(None, metavar="NAME", group=DATA,
                                 help="a `datasets` name or script (from the Hub when online)")
    dataset_config: str | None = option(None, metavar="NAME", group=DATA, help="configuration of --dataset")
    dataset_split: str = option("train", group=DATA, help="split of --dataset to train on")
    text_column: str = option("text", group=DATA, help="column (json key) holding the text")
    validation_data: list[str] = option(
        [], nargs="+", metavar="PATH", group=DATA,
        help="held-out files/folders (default: the last --validation-split of the training blocks)")
    validation_split: float = option(0.05, type=float, metavar="FRACTION", group=DATA,
                                     help="share of the blocks held out for perplexity: the corpus's last blocks")
    block_size: int | None = option(None, type=positive_int, group=DATA,
                                    help="tokens per training block (default: the context, at most 1024)")
    data_description: str | None = None  # for the model card; derived from the sources when None

    max_steps: int = option(-1, type=int, group=OPTIMISATION, help="optimizer steps; overrides --epochs when > 0")
    epochs: float = option(1.0, type=positive_float, group=OPTIMISATION, help="passes over the training blocks")
    batch_size: int = option(8, type=positive_int, group=OPTIMISATION, help="blocks per device per step")
    eval_batch_size: int | None = option(None, type=positive_int, group=OPTIMISATION, help="default: --batch-size")
    gradient_accumulation_steps: int = option(1, type=positive_int, group=OPTIMISATION,
                                              help="steps whose gradients are summed before each update")
    learning_rate: float | None = option(None, type=positive_float, group=OPTIMISATION,
                                         help="default: 5e-4 from scratch, 5e-5 fine-tuning")
    lr_scheduler: str = option("linear", group=OPTIMISATION, help="Transformers scheduler name (linear, cosine, ...)")
    warmup_steps: int = option(0, type=non_negative_int, group=OPTIMISATION, help="linear warm-up steps")
    weight_decay: float = option(0.0, type=non_negative_float, group=OPTIMISATION, help="AdamW weight decay")
    max_grad_norm: float = option(1.0, type=non_negative_float, group=OPTIMISATION, help="0: no clipping")
    seed: int = option(42, type=int, group=OPTIMISATION, help="seed of initialisation, data order and dropout")
    bf16: bool = option(False, group=OPTIMISATION, help="bfloat16 mixed precision")
    gradient_checkpointing: bool = option(False, group=OPTIMISATION,
                                          help="recompute activations in the backward pass to save memory")
    compile: bool = option(False, group=OPTIMISATION,
                           help="torch.compile the model (inductor): its compile time (up to a minute on CPU) pays back "
                                "only on long runs, mostly with --bf16; see the README's Performance section")

    output: Path = option(flags=("--output", "-o"), type=Path, metavar="FOLDER", group=OUTPUT,
                          help="the final model folder")
    overwrite: bool = option(False, group=OUTPUT,
                             help="replace an existing output folder and start over in the checkpoint folder")
    checkpoint_dir: Path | None = option(None, type=Path, metavar="FOLDER", group=OUTPUT,
                                         help="default: OUTPUT-checkpoints")
    save_steps: int = option(500, type=non_negative_int, group=OUTPUT, help="checkpoint every N steps (0: never)")
    save_total_limit: int = option(2, type=positive_int, group=OUTPUT, help="checkpoints to keep")
    keep_checkpoints: bool = option(False, group=OUTPUT,
                                    help="keep the checkpoints after training succeeded (default: deleted then)")
    resume: str | None = option(
        None, nargs="?", const="latest", metavar="CHECKPOINT", group=OUTPUT,
        help="continue from the latest complete checkpoint in --checkpoint-dir, or from CHECKPOINT")
    logging_steps: int = option(10, type=positive_int, group=OUTPUT, help="log the training loss every N steps")
    eval_steps: int | None = option(None, type=positive_int, group=OUTPUT,
                                    help="evaluate every N steps (default: before and after only)")
    report_to: list[str] = option(
        ["none"], nargs="+", choices=LOGGERS, metavar="LOGGER", group=OUTPUT,
        help=f"also send the logs to these Trainer loggers ({', '.join(LOGGERS[2:])}; 'all': every one installed); "
             "TensorBoard writes to $TENSORBOARD_LOGGING_DIR, else to runs/ in the checkpoint folder (kept)")

    ddp_backend: str | None = option(None, choices=("gloo", "nccl", "mpi", "xccl", "hccl"), group=DISTRIBUTED,
                                     help="default: nccl on GPUs, gloo on CPU")
    fsdp: str = option("", metavar="OPTIONS", group=DISTRIBUTED,
                       help="Trainer FSDP options, e.g. 'full_shard auto_wrap'")
    fsdp_config: str | None = option(None, metavar="JSON", group=DISTRIBUTED,
                                     help="Trainer fsdp_config (a JSON file or string)")
    dataloader_workers: int = option(0, type=non_negative_int, group=DISTRIBUTED, help="data-loading processes")


VARIANTS = "variants (--variants, or --base with --vary)"
BUDGET = "data and budget (the same for every variant)"


def parse_vary(items: list[str]) -> dict[str, list[Any]]:
    """`["norm_type=layernorm,rmsnorm", "tie_word_embeddings=true,false"]` -> {field: values}; values are JSON, else
    strings."""
    fields = {field.name for field in dataclasses.fields(TinyLMConfig)}
    vary: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ValueError(f"--vary wants FIELD=VALUE,VALUE,..., got {item!r}.")
        if name not in fields:
            raise ValueError(f"--vary {name}: not a TinyLM config field.")
        if name in vary:
            raise ValueError(f"--vary {name} is given twice.")
        vary[name] = [_json_or_text(value.strip()) for value in values.split(",") if value.strip()]
    return vary


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclasses.dataclass(kw_only=True)
class CompareSettings(OutputOptions):
    """Everything `tinylm compare` needs; the defaults are the command's defaults."""

    variants: list[str] = option([], nargs="+", metavar="PRESET_OR_CONFIG", group=VARIANTS,
                                 help="compare these presets, config.json files or model folders' architectures")
    base: str | None = option(None, metavar="PRESET_OR_CONFIG", group=VARIANTS,
                              help="the preset or config.json that --vary changes")
    vary: dict[str, list[Any]] = option(
        {}, nargs="+", action="extend", metavar="FIELD=V1,V2", group=VARIANTS, parse=parse_vary,
        help="values of a config field to compare, e.g. 'norm_type=layernorm,rmsnorm' (repeatable); the variants "
             "are every combination, or see --one-at-a-time")
    one_at_a_time: bool = option(False, group=VARIANTS,
                                 help="change one --vary field at a time from --base instead of crossing them")
    config_overrides: dict[str, Any] = option(
        {}, metavar="K=V,...", group=VARIANTS, parse=parse_config_overrides,
        help="config fields set in every variant before --vary, e.g. 'hidden_size=64,num_hidden_layers=2'")
    params_matched: bool = option(
        False, group=VARIANTS,
        help="set each variant's MLP width (intermediate_size) so its parameter count is within 1%% of the first "
             "variant's")

    data: list[str] = option(nargs="+", metavar="PATH", group=BUDGET,
                             help="text or json/jsonl files, or folders searched recursively")
    glob: list[str] = option(list(DEFAULT_PATTERNS), nargs="+", metavar="PATTERN", group=BUDGET,
                             help="file-name patterns to take from folders")
    validation_split: float = option(0.05, type=float, metavar="FRACTION", group=BUDGET,
                                     help="share of the blocks held out: the corpus's last blocks")
    tokenizer: str = option("auto", metavar="{auto,bpe,byte,FOLDER}", group=BUDGET,
                            help="the one tokenizer of every variant: trained once on the data (as in `tinylm "
                                 "train`) or a tokenizer folder")
    vocab_size: int | None = option(None, type=positive_int, group=BUDGET,
                                    help="vocabulary of a new tokenizer (default: the first variant's)")
    tokens: int = option(500_000, type=positive_int, group=BUDGET,
                         help="training tokens per variant, rounded down to whole steps")
    block_size: int = option(128, type=positive_int, group=BUDGET, help="tokens per training block")
    batch_size: int = option(8, type=positive_int, group=BUDGET, help="blocks per step")
    learning_rate: float = option(1e-3, type=positive_float, group=BUDGET, help="peak learning rate")
    lr_scheduler: str = option("cosine", group=BUDGET, help="Transformers scheduler name")
    warmup_steps: int | None = option(None, type=non_negative_int, group=BUDGET,
                                      help="linear warm-up steps (default: a tenth of the steps)")
    evaluations: int = option(10, type=positive_int, group=BUDGET,
                              help="held-out evaluations along each run (the points of the plot)")
    seed: int = option(42, type=int, group=BUDGET, help="seed of initialisation, data order and dropout")

    output: Path = option(flags=("--output", "-o"), type=Path, metavar="FOLDER", group=OUTPUT,
                          help="the comparison folder: report, tokenizer and one model folder per variant")
    resume: bool = option(False, group=OUTPUT,
                          help="continue the comparison in --output: finished variants are not trained again")
    overwrite: bool = option(False, group=OUTPUT, help="delete the comparison in --output and start over")
    save_steps: int = option(0, type=non_negative_int, group=OUTPUT,
                             help="checkpoint each variant every N steps, so --resume continues a variant cut "
                                  "short (0: a cut variant starts over)")
    decode_tokens: int = option(64, type=positive_int, group=OUTPUT,
                                help="tokens generated to measure each model's decoding speed")
