"""OpenAI's original TensorFlow GPT-2 release (`hparams.json`, `model.ckpt.*`, `encoder.json`, `vocab.bpe`), read
without TensorFlow by `tf_checkpoint.py` into GPT-2's layout (see `gpt2.py`); read only.
"""

from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2TokenizerFast, PreTrainedTokenizerBase

from ...model_folder import read_json
from ..base import Checkpoint, ConversionError, Format
from ..sources import require_size_fields
from ..tf_checkpoint import TensorBundleEntry, TFCheckpointReader, resolve_checkpoint_prefix
from .gpt2 import check_gpt2_state_dict, gpt2_checkpoint

OPENAI_SIZE_FIELDS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
_ENDOFTEXT = "<|endoftext|>"
LICENSE = "mit"  # OpenAI's gpt-2 repository: modified MIT license


class OpenAITFFormat(Format):
    name = "openai-tf"
    label = "OpenAI's TensorFlow GPT-2 release"
    signature = "a folder with hparams.json and model.ckpt.index (OpenAI's TensorFlow release)"

    def detect(self, path: Path) -> bool:
        return (path / "hparams.json").is_file() and (
            (path / "checkpoint").is_file() or any(path.glob("*.ckpt.index"))
        )

    def read(self, path: Path, repo_id: str | None, progress: bool) -> Checkpoint:
        return load_openai_tf(path, progress=progress)


FORMAT = OpenAITFFormat()


def load_openai_tf(folder: Path, progress: bool = True) -> Checkpoint:
    """Read OpenAI's original TF GPT-2 release folder without TensorFlow, checking every tensor's checksum."""
    hparams_path = folder / "hparams.json"
    hparams = read_json(hparams_path)
    require_size_fields(hparams, OPENAI_SIZE_FIELDS, hparams_path)
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
    return gpt2_checkpoint(
        config,
        state_dict,
        format=FORMAT.name,
        name=f"OpenAI GPT-2 `{folder.name}`",
        description=(
            f"OpenAI's original TensorFlow GPT-2 release `{folder.name}` (checkpoint `{prefix.name}`, read without "
            "TensorFlow, every tensor's CRC32C checked)"
        ),
        tokenizer=tokenizer,
        license=LICENSE,
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


# ----------------------------------------------------------------------------------------------- names


def openai_tf_name_to_gpt2(name: str) -> str | None:
    """OpenAI's TF variable name -> the GPT-2 name (`model/h3/attn/c_attn/w` -> `h.3.attn.c_attn.weight`);
    None for a name outside the GPT-2 model (e.g. optimizer slots)."""
    parts = name.split("/")
    if parts[0] != "model" or len(parts) < 2:
        return None
    parts = parts[1:]
    if parts[0].startswith("h") and parts[0][1:].isdigit():
        parts = ["h", parts[0][1:], *parts[1:]]
    if len(parts) == 1:  # wte, wpe
        return f"{parts[0]}.weight"
    leaf = {"g": "weight", "w": "weight", "b": "bias"}.get(parts[-1])
    return None if leaf is None else ".".join([*parts[:-1], leaf])


def openai_tf_tensor_to_gpt2(gpt2_name: str, array: torch.Tensor) -> torch.Tensor:
    """OpenAI stores Conv1D weights as [1, in, out] (a 1x1 convolution kernel); GPT-2's Conv1D holds [in, out]."""
    if gpt2_name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
        if array.dim() != 3 or array.shape[0] != 1:
            raise ConversionError(
                f"OpenAI tensor for {gpt2_name!r} has shape {list(array.shape)}; expected [1, in, out]."
            )
        return array[0]
    return array
