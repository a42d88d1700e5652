"""Finding a conversion source (a local path or a Hub repo id) and reading what every Transformers folder may hold
besides its weights: tokenizer, generation config, the license in its model card."""

from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase

from ..model_folder import read_json, unset_fields
from .base import ConversionError

# What a Transformers checkpoint needs, fetched from the Hub without the other frameworks' weights.
_HUB_FILES = [
    "config.json", "generation_config.json", "README.md",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
]  # fmt: skip
_HUB_PICKLE_FILES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def resolve_source(
    source: str, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, str | None]:
    """(local path, Hub repo id or None) for a path or a Hub repo id.

    A path that exists wins (a folder, or a file for formats stored as one file). Otherwise `source` must be a Hub
    repo id; it is fetched with `huggingface_hub`, which reads the local Hub cache when `HF_HUB_OFFLINE=1`.
    Safetensors weights are preferred; `pytorch_model*.bin` is fetched only when the repo has no safetensors.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path, None
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise FileNotFoundError(f"Source {source!r} is neither an existing path nor a valid Hub repo id.") from None
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


def hub_suffix(repo_id: str | None) -> str:
    """" from the Hugging Face Hub" for a source fetched from the Hub, for descriptions."""
    return " from the Hugging Face Hub" if repo_id else ""


def config_model_type(folder: Path) -> str | None:
    """The `model_type` of a Transformers folder's config.json; None when the folder has none."""
    if not (folder.is_dir() and (folder / "config.json").is_file()):
        return None
    return read_json(folder / "config.json").get("model_type")


def require_size_fields(
    values: Mapping, fields: tuple[str, ...], path: Path, aliases: Mapping[str, str] | None = None
) -> None:
    """Refuse a config file that does not set every one of the size `fields`, naming all the missing ones."""
    missing = unset_fields(values, fields, aliases)
    if missing:
        raise ConversionError(f"{path} lacks the size field(s) {', '.join(missing)}, which fix the tensor shapes.")


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase | None:
    """The folder's Transformers tokenizer, or None when it has no tokenizer files."""
    if not folder.is_dir() or not any((folder / name).is_file() for name in _TOKENIZER_FILES):
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


def _has_safetensors(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
