"""A saved model folder: its config, its weight files, and the check that they belong together.

Used by every command that opens a folder (train, generate, info, convert). Weights are read from safetensors (single
or sharded); `pytorch_model*.bin` only with `weights_only=True`. Problems raise `CheckpointError` (a ValueError) or an
OSError naming the file and what is wrong.
"""

import difflib
import json
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from .configuration_tinylm import TinyLMConfig
from .modeling_tinylm import TinyLMForCausalLM


class CheckpointError(ValueError):
    """A model folder's files cannot be read, or do not agree with each other."""


# The config fields that fix the tensor shapes; TinyLM's also have defaults, so a folder may leave them out.
TINYLM_SIZE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "max_position_embeddings",
)  # fmt: skip


def read_tinylm_config(folder: str | Path) -> TinyLMConfig:
    """The config of a TinyLM model folder; ValueError naming the problem for anything else."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Model folder not found: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a TinyLM model folder: it is a file.")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} is not a TinyLM model folder: it has no config.json.")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    if model_type != TinyLMConfig.model_type:
        hint = " Convert it first with `tinylm convert`." if model_type == "gpt2" else ""
        raise ValueError(f"{folder} is not a TinyLM model folder (its model_type is {model_type!r}).{hint}")
    return TinyLMConfig.from_pretrained(str(folder))


def load_weights(folder: Path, progress: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a Transformers checkpoint: safetensors (single or sharded) first, else `pytorch_model*.bin`
    loaded with `weights_only=True` (plain pickle, which can run arbitrary code, is never used)."""
    return _read_checkpoint(folder, lambda path: _load_weight_file(path, progress))


def weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a Transformers checkpoint, by name; safetensors files are read from their
    headers only, which also finds a truncated or corrupt file."""
    return _read_checkpoint(folder, _read_shapes)


def _read_checkpoint(folder: Path, read_file: Callable[[Path], dict]) -> dict:
    """`read_file` applied to each weight file of `folder` (its index's shards, or the single file), merged."""
    for index_name, single_name in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index_path = folder / index_name
        if index_path.is_file():
            weight_map = read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index_path} has no `weight_map`.")
            merged = {}
            for file_name in sorted(set(weight_map.values())):
                if not (folder / file_name).is_file():
                    raise FileNotFoundError(f"Weight file {folder / file_name} (named by {index_path}) does not exist.")
                merged.update(read_file(folder / file_name))
            listed_but_absent = sorted(set(weight_map) - set(merged))
            if listed_but_absent:
                raise CheckpointError(
                    f"{index_path} lists tensor(s) its shards do not contain: {name_list(listed_but_absent)}."
                )
            return merged
        if (folder / single_name).is_file():
            return read_file(folder / single_name)
    raise CheckpointError(
        f"{folder} has no weights: expected model.safetensors, a sharded model.safetensors.index.json, "
        "pytorch_model.bin or pytorch_model.bin.index.json."
    )


def _load_weight_file(path: Path, progress: bool) -> dict[str, torch.Tensor]:
    if path.suffix != ".safetensors":
        return _load_pickled_weights(path)
    with _safetensors_errors_named(path), safe_open(path, framework="pt") as file:
        names = tqdm(file.keys(), desc=f"Reading {path.name}", unit="tensor", disable=not progress)
        return {name: file.get_tensor(name) for name in names}


def _read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix != ".safetensors":
        return {name: tuple(tensor.shape) for name, tensor in _load_pickled_weights(path).items()}
    with _safetensors_errors_named(path), safe_open(path, framework="pt") as file:
        return {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}


@contextmanager
def _safetensors_errors_named(path: Path) -> Iterator[None]:
    try:
        yield
    except SafetensorError as error:
        raise CheckpointError(
            f"Cannot read {path}: {error} (truncated or corrupt safetensors file?). Download or save it again."
        ) from None


def _load_pickled_weights(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict, loaded with `weights_only=True` only: a file holding anything but tensors is refused."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise CheckpointError(
            f"Refusing to load {path}: it holds objects other than tensors"
            f"{f' (it references `{found.group(1)}`)' if found else ''}, and only `weights_only=True` loading is "
            "allowed (plain pickle can run arbitrary code). Save the weights as safetensors from a trusted copy."
        ) from None
    except (RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"Cannot read {path}: {error} (truncated or corrupt file?)") from None
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise CheckpointError(f"{path} is not a state dict: it should map tensor names to tensors.")
    return state_dict


def check_tinylm_checkpoint(folder: Path, config: TinyLMConfig) -> None:
    """Refuse a TinyLM folder whose weight files are unreadable, or whose tensors are missing, extra or shaped
    otherwise than `config` requires, naming the file or the tensor and both shapes. Reads safetensors headers only,
    so it is cheap to run before loading."""
    problem = _tinylm_shape_problem(weight_shapes(folder), config)
    if problem:
        unset = unset_fields(read_json(folder / "config.json"), TINYLM_SIZE_FIELDS)
        hint = f" Its config.json does not set {', '.join(unset)}, so the default was used." if unset else ""
        raise CheckpointError(f"{folder}: {problem}; the config and the weights do not belong together.{hint}")


def _tinylm_shape_problem(found: dict[str, tuple[int, ...]], config: TinyLMConfig) -> str | None:
    """How the tensor shapes `found` in a checkpoint disagree with a TinyLM built from `config`; None if they agree."""
    with torch.device("meta"):
        model = TinyLMForCausalLM(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if any(".self_attn.qkv_proj." in name for name in found):
        expected = _in_fused_qkv_layout(expected)
    if not any(name in expected for name in found):  # a `TinyLMModel` save: names without the `model.` prefix
        found = {f"{model.base_model_prefix}.{name}": shape for name, shape in found.items()}
    missing = [name for name in expected if name not in found and name not in model.all_tied_weights_keys]
    if missing:
        return f"the weights lack {len(missing)} tensor(s) of this config: {name_list(missing)}"
    unexpected = sorted(name for name in found if name not in expected)
    if unexpected:
        return f"the weights hold {len(unexpected)} tensor(s) this config has no place for: {name_list(unexpected)}"
    for name, shape in expected.items():
        if name in found and found[name] != shape:
            return f"tensor {name!r} has shape {list(found[name])}, but the config requires {list(shape)}"
    return None


def _in_fused_qkv_layout(expected: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The tensor shapes `expected` as folders saved before q, k and v had a projection each hold them: one
    `self_attn.qkv_proj` with rows [q; k; v] (`from_pretrained` splits it, see `modeling_tinylm`)."""
    fused = {}
    for name, shape in expected.items():
        if ".self_attn.q_proj." in name:
            key, value = (expected[name.replace(".q_proj.", f".{part}.")] for part in ("k_proj", "v_proj"))
            fused[name.replace(".q_proj.", ".qkv_proj.")] = (shape[0] + key[0] + value[0], *shape[1:])
        elif ".self_attn.k_proj." not in name and ".self_attn.v_proj." not in name:
            fused[name] = shape
    return fused


def unset_fields(values: Mapping, fields: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> list[str]:
    """Each of `fields` that `values` does not set, under its name or an alias (`aliases` maps alias -> name), with
    a likely misspelling of it that `values` holds instead."""
    aliases = aliases or {}
    present = {aliases.get(key, key) for key in values}
    others = [key for key in values if aliases.get(key, key) not in fields]
    unset = []
    for name in fields:
        if name not in present:
            close = difflib.get_close_matches(name, others, n=1, cutoff=0.8)
            unset.append(f"{name} (misspelled as {close[0]!r}?)" if close else name)
    return unset


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} should hold a JSON object.")
    return value


def name_list(names: list[str], limit: int = 10) -> str:
    """`names` joined by commas, the first `limit` of them only: an error message stays one readable line."""
    rest = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {rest} more" if rest > 0 else "")
