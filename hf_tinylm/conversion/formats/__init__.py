"""The registry of checkpoint formats: each is one module here with a `FORMAT` (see `..base.Format`)."""

from pathlib import Path

from ..base import ConversionError, Format
from ..sources import config_model_type
from . import gguf, gpt2, llama, nanogpt, openai_tf, tinylm

_MODULES = (tinylm, gpt2, openai_tf, llama, nanogpt, gguf)  # detection tries them in this order
FORMATS: dict[str, Format] = {module.FORMAT.name: module.FORMAT for module in _MODULES}


def get_format(name: str) -> Format:
    """The format registered as `name`; ValueError listing the registered names otherwise."""
    if name not in FORMATS:
        raise ValueError(f"Unknown checkpoint format {name!r}: use one of {', '.join(FORMATS)}.")
    return FORMATS[name]


def writable_formats() -> tuple[str, ...]:
    """The names `--to` accepts."""
    return tuple(name for name, format in FORMATS.items() if format.writable)


def detect_format(path: Path) -> Format:
    """The format that claims `path`; anything no format reads is refused with what each one looks for."""
    for format in FORMATS.values():
        if format.detect(path):
            return format
    looked_for = "; ".join(format.signature for format in FORMATS.values() if format.signature)
    found = ""
    if path.is_dir() and (path / "config.json").is_file():
        found = f" Its config.json has model_type={config_model_type(path)!r}."
    raise ConversionError(f"{path} is not a checkpoint this converter reads, which are: {looked_for}.{found}")
