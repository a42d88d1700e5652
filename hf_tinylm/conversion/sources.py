"""Find and read conversion sources: Transformers checkpoints (folder or Hub id) and OpenAI's TF GPT-2 release.

Everything here returns plain tensors, configs and tokenizers; nothing is converted yet. Unreadable or
incomplete sources raise `ConversionError` (a ValueError) or an OSError naming the file and what is wrong.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from tqdm.auto import tqdm
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2TokenizerFast,
    PreTrainedTokenizerBase,
)

from ..model_folder import load_weights, read_json, unset_fields
from .gpt2_mapping import (
    ConversionError,
    check_gpt2_state_dict,
    normalize_gpt2_state_dict,
    openai_tf_name_to_gpt2,
    openai_tf_tensor_to_gpt2,
)
from .tf_checkpoint import (
    TensorBundleEntry,
    TFCheckpointReader,
    resolve_checkpoint_prefix,
)

OPENAI_TF = "openai-tf"
TRANSFORMERS_GPT2 = "gpt2"
TINYLM = "tinylm"

# What a Transformers checkpoint needs, fetched from the Hub without the other frameworks' weights.
_HUB_FILES = [
    "config.json", "generation_config.json", "README.md",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
]  # fmt: skip
_HUB_PICKLE_FILES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
# The config fields that fix the tensor shapes; TinyLM's also have defaults, so a folder may leave them out.
GPT2_SIZE_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
OPENAI_SIZE_FIELDS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
_ENDOFTEXT = "<|endoftext|>"


@dataclass
class GPT2Source:
    """A GPT-2 checkpoint read into memory, in Transformers' naming (unprefixed, see `gpt2_mapping`)."""

    kind: str  # OPENAI_TF or TRANSFORMERS_GPT2
    name: str  # short name, e.g. the Hub repo id or the folder name
    description: str  # what was read, for the model card
    config: GPT2Config
    state_dict: dict[str, torch.Tensor]
    tokenizer: PreTrainedTokenizerBase | None = None
    generation_config: GenerationConfig | None = None
    repo_id: str | None = None  # the Hub repo it came from, if any
    license: str | None = None  # from the source's model card, if any
    notes: list[str] = field(default_factory=list)  # decisions worth telling the user


# ----------------------------------------------------------------------------------------------- locating


def resolve_source(
    source: str, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str | None]:
    """(local folder, Hub repo id or None) for a folder path or a Hub repo id.

    A path that exists wins. Otherwise `source` must be a Hub repo id; it is fetched with `huggingface_hub`, which
    reads the local Hub cache when `HF_HUB_OFFLINE=1`. Safetensors weights are preferred; `pytorch_model*.bin` is
    fetched only when the repo has no safetensors.
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConversionError(f"Source {source} is a file; pass the checkpoint's folder.")
        return path, None
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise FileNotFoundError(f"Source {source!r} is neither an existing folder nor a valid Hub repo id.") from None
    try:
        folder = Path(snapshot_download(source, revision=revision, cache_dir=cache_dir, allow_patterns=_HUB_FILES))
        if not _has_safetensors(folder) and not (folder / "hparams.json").exists():
            folder = Path(
                snapshot_download(source, revision=revision, cache_dir=cache_dir, allow_patterns=_HUB_PICKLE_FILES)
            )
    except (LocalEntryNotFoundError, IncompleteSnapshotError) as error:
        raise FileNotFoundError(
            f"{source!r} is not a local folder and not (completely) in the local Hub cache, and the Hub cannot be "
            f"reached ({error}). Download it first (`hf download {source}`) with network access, or pass a folder."
        ) from None
    except HfHubHTTPError as error:  # repo or revision not found, gated repo, Hub down
        raise FileNotFoundError(f"Could not fetch {source!r} from the Hugging Face Hub: {error}") from None
    return folder, source


def detect_format(folder: Path) -> str:
    """OPENAI_TF, TRANSFORMERS_GPT2 or TINYLM; anything else is refused with what was found."""
    if (folder / "hparams.json").is_file() and (
        (folder / "checkpoint").is_file() or any(folder.glob("*.ckpt.index"))
    ):
        return OPENAI_TF
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(
            f"{folder} is not a GPT-2 checkpoint: it has neither a config.json (Transformers) nor hparams.json with "
            "model.ckpt.index (OpenAI's TensorFlow release)."
        )
    model_type = read_json(config_path).get("model_type")
    if model_type in (TRANSFORMERS_GPT2, TINYLM):
        return model_type
    raise ConversionError(
        f"{config_path} has model_type={model_type!r}; this converter reads GPT-2 ('gpt2') and TinyLM ('tinylm') "
        "checkpoints only."
    )


# ----------------------------------------------------------------------------------------------- Transformers


def load_transformers_gpt2(folder: Path, repo_id: str | None = None, progress: bool = True) -> GPT2Source:
    """Read a Transformers GPT-2 checkpoint folder (`GPT2LMHeadModel` or `GPT2Model` save, any weight layout)."""
    values = read_json(folder / "config.json")
    _require_size_fields(values, GPT2_SIZE_FIELDS, folder / "config.json", aliases=GPT2Config.attribute_map)
    config = GPT2Config.from_dict(values)
    state_dict = normalize_gpt2_state_dict(load_weights(folder, progress=progress))
    check_gpt2_state_dict(state_dict, config)
    notes = []
    if "GPT2Model" in (config.architectures or []):
        notes.append(
            "The source is a `GPT2Model` save (no language-modelling head); the head is tied to the token "
            "embeddings, as in `GPT2LMHeadModel`."
        )
    tokenizer = load_tokenizer(folder)
    if tokenizer is None:
        notes.append("The source has no tokenizer files; the output folder has none either.")
    name = repo_id or folder.name
    return GPT2Source(
        kind=TRANSFORMERS_GPT2,
        name=name,
        description=f"the Transformers GPT-2 checkpoint `{name}`" + (" from the Hugging Face Hub" if repo_id else ""),
        config=config,
        state_dict=state_dict,
        tokenizer=tokenizer,
        generation_config=load_generation_config(folder),
        repo_id=repo_id,
        license=source_license(folder),
        notes=notes,
    )


def _require_size_fields(
    values: Mapping, fields: tuple[str, ...], path: Path, aliases: Mapping[str, str] | None = None
) -> None:
    """Refuse a config file that does not set every one of the size `fields`, naming all the missing ones."""
    missing = unset_fields(values, fields, aliases)
    if missing:
        raise ConversionError(f"{path} lacks the size field(s) {', '.join(missing)}, which fix the tensor shapes.")


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase | None:
    """The folder's Transformers tokenizer, or None when it has no tokenizer files."""
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # tokenizers raise many types; the message matters, not the class
        raise ConversionError(f"The tokenizer files in {folder} cannot be loaded: {error}") from None


def load_generation_config(folder: Path) -> GenerationConfig | None:
    if not (folder / "generation_config.json").is_file():
        return None
    return GenerationConfig.from_pretrained(folder)


def source_license(folder: Path) -> str | None:
    """The `license` in the source's model card metadata, if it has a card."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # a README without valid card metadata just has no license to carry over
        return None


# ----------------------------------------------------------------------------------------------- OpenAI TF


def load_openai_tf(folder: Path, progress: bool = True) -> GPT2Source:
    """Read OpenAI's original TF GPT-2 release folder without TensorFlow, checking every tensor's checksum."""
    hparams_path = folder / "hparams.json"
    hparams = read_json(hparams_path)
    _require_size_fields(hparams, OPENAI_SIZE_FIELDS, hparams_path)
    tokenizer = openai_tokenizer(folder)
    eot = tokenizer.convert_tokens_to_ids(_ENDOFTEXT) if tokenizer is not None else None
    # OpenAI's model.py: LayerNorm eps 1e-5, tanh-approximated GELU, scaled attention, head tied to wte.
    config = GPT2Config(
        vocab_size=hparams["n_vocab"],
        n_positions=hparams["n_ctx"],
        n_embd=hparams["n_embd"],
        n_head=hparams["n_head"],
        n_layer=hparams["n_layer"],
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        architectures=["GPT2LMHeadModel"],
    )
    prefix = resolve_checkpoint_prefix(folder)
    reader = TFCheckpointReader(prefix)
    names, ignored = plan_openai_tf(reader.entries(), config)  # names and shapes checked before reading any data
    state_dict = {}
    for tf_name in tqdm(names, desc="Reading TF tensors", unit="tensor", disable=not progress):
        tensor = torch.from_numpy(reader.read(tf_name, verify=True))
        state_dict[names[tf_name]] = openai_tf_tensor_to_gpt2(names[tf_name], tensor)
    notes = [f"Ignored TF variables outside the model: {', '.join(ignored)}."] if ignored else []
    if tokenizer is None:
        notes.append("The release folder has no encoder.json/vocab.bpe; the output folder has no tokenizer.")
    return GPT2Source(
        kind=OPENAI_TF,
        name=f"OpenAI GPT-2 `{folder.name}`",
        description=(
            f"OpenAI's original TensorFlow GPT-2 release `{folder.name}` (checkpoint `{prefix.name}`, read without "
            "TensorFlow, every tensor's CRC32C checked)"
        ),
        config=config,
        state_dict=state_dict,
        tokenizer=tokenizer,
        notes=notes,
    )


def plan_openai_tf(entries: dict[str, TensorBundleEntry], config: GPT2Config) -> tuple[dict[str, str], list[str]]:
    """({TF name: GPT-2 name}, ignored TF names) for a checkpoint index, refusing a missing, misshaped or foreign
    tensor from the index alone (shapes only, on the meta device), before any data is read."""
    names, ignored, shapes = {}, [], {}
    for tf_name, entry in entries.items():
        gpt2_name = openai_tf_name_to_gpt2(tf_name)
        if gpt2_name is None:
            ignored.append(tf_name)
            continue
        if not entry.dtype.startswith(("DT_FLOAT", "DT_HALF", "DT_BFLOAT16", "DT_DOUBLE")):
            raise ConversionError(f"TF tensor {tf_name!r} has dtype {entry.dtype}; GPT-2 weights are floating point.")
        names[tf_name] = gpt2_name
        shapes[gpt2_name] = openai_tf_tensor_to_gpt2(gpt2_name, torch.empty(entry.shape, device="meta"))
    check_gpt2_state_dict(shapes, config)
    return names, ignored


def openai_tokenizer(folder: Path) -> PreTrainedTokenizerBase | None:
    """OpenAI's `encoder.json` + `vocab.bpe` as a Transformers GPT-2 tokenizer (same content as the Hub's
    `vocab.json` + `merges.txt`); None if the folder lacks them."""
    encoder_path, bpe_path = folder / "encoder.json", folder / "vocab.bpe"
    if not (encoder_path.is_file() and bpe_path.is_file()):
        return None
    vocab = read_json(encoder_path)
    lines = bpe_path.read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if any(len(pair) != 2 for pair in merges):
        raise ConversionError(f"{bpe_path} is not a BPE merges file (expected one 'a b' pair per line).")
    if _ENDOFTEXT not in vocab:
        raise ConversionError(f"{encoder_path} has no {_ENDOFTEXT!r} token; it is not a GPT-2 encoder.")
    # `vocab=`/`merges=` (not vocab_file/merges_file, which Transformers 5 silently ignores).
    return GPT2TokenizerFast(
        vocab=vocab, merges=merges, unk_token=_ENDOFTEXT, bos_token=_ENDOFTEXT, eos_token=_ENDOFTEXT
    )


# ----------------------------------------------------------------------------------------------- helpers


def _has_safetensors(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
