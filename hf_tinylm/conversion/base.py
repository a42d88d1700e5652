"""What every checkpoint format provides to the conversion pipeline (`convert.py`), and the helpers they share.

A format reads a source into a `Checkpoint`: a TinyLM config, the weights as a stream of tensors under TinyLM names,
the tokenizer and generation settings when the format has them, and how to build the *reference* model (the
source's own mathematics, in float32) that the written output is compared with. A format that can be written says
which TinyLM configs it can express (`refusals`), writes a checkpoint, and reloads what it wrote for the parity check.
Everything in between (progress, dtype, parity, model card, moving the output into place) is the pipeline's.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..configuration_tinylm import TinyLMConfig
from ..model_folder import name_list

Tensors = Iterator[tuple[str, torch.Tensor]]


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted faithfully; the message names what and why."""


@dataclass
class Checkpoint:
    """A source read by its format, in TinyLM's terms; nothing is converted to the target yet."""

    format: str  # the reading format's name, e.g. "gpt2"
    name: str  # short name, e.g. the Hub repo id or the folder name
    description: str  # what was read, for the model card
    config: TinyLMConfig  # the TinyLM config computing exactly what the source computes
    tensors: Callable[[], Tensors]  # the weights under TinyLM names, one at a time
    num_tensors: int  # how many `tensors` yields, for the progress bar
    dtype: torch.dtype  # the source's weights dtype
    reference: Callable[[], Callable[[torch.Tensor], torch.Tensor]]  # builds: token ids -> float32 logits
    reference_name: str  # what `reference` is, for the card
    tokenizer: PreTrainedTokenizerBase | None = None
    generation_config: GenerationConfig | None = None
    repo_id: str | None = None  # the Hub repo it came from, if any
    license: str | None = None  # from the source's model card, if any
    notes: list[str] = field(default_factory=list)  # decisions worth telling the user


class Format:
    """One checkpoint format. Subclasses set `name` and `label` and override what the format supports."""

    name: str  # the registry key and `--to` value
    label: str  # how messages and cards name it
    signature: str = ""  # what `detect` looks for, for the message refusing an unknown source
    output_is_file: bool = False  # written as one file (e.g. GGUF) rather than a folder
    card_template: str = "exported"  # the model-card template for output in this format
    card_tags: tuple[str, ...] = ()  # the card's tags, besides the source format and "converted"

    def detect(self, path: Path) -> bool:
        """Whether `path` (a folder or file) is a checkpoint in this format."""
        return False

    def read(self, path: Path, repo_id: str | None, progress: bool) -> Checkpoint:
        """The checkpoint at `path` (which `detect` claimed), read and checked; `repo_id` if it came from the Hub."""
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        return type(self).write is not Format.write

    def refusals(self, config: TinyLMConfig) -> list[str]:
        """Each setting of `config` this format cannot express, as `field=value (reason)`; empty if none."""
        return []

    def write(self, checkpoint: Checkpoint, state_dict: dict[str, torch.Tensor], output: Path, dtype: str,
              max_shard_size: str | int) -> int:  # fmt: skip
        """Write `state_dict` (TinyLM names, already in `dtype`) as this format at `output`; returns the number of
        parameters written."""
        raise NotImplementedError

    def reload(self, output: Path, dtype: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """What was written at `output`, loaded back by an independent reader: token ids -> logits."""
        raise NotImplementedError

    def card_fields(self, checkpoint: Checkpoint, output: Path) -> dict:
        """Extra fields for this format's model-card template."""
        return {}


def build_model(model_class: type[PreTrainedModel], config, state_dict: Mapping[str, torch.Tensor]) -> PreTrainedModel:
    """`model_class(config)` holding exactly `state_dict` (no random initialisation; tied head re-tied), in eval."""
    with torch.device("meta"):
        model = model_class(config)
    missing, unexpected = model.load_state_dict(dict(state_dict), strict=False, assign=True)
    tied = set(model.all_tied_weights_keys)
    if unexpected or set(missing) - tied:
        raise ConversionError(
            f"Internal mapping error building {model_class.__name__}: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}."
        )
    model.tie_weights()
    _rebuild_non_persistent_buffers(model)
    return model.eval()


def _rebuild_non_persistent_buffers(model: PreTrainedModel) -> None:
    """Compute the buffers no checkpoint holds (RoPE frequencies, position tables, ...), left on the meta device by
    `build_model`, the way `from_pretrained` does: by the model's own `_init_weights` on the module owning them."""
    owners = {name.rpartition(".")[0] for name, buffer in model.named_non_persistent_buffers() if buffer.is_meta}
    for owner in sorted(owners):
        module = model.get_submodule(owner)
        for name in module._non_persistent_buffers_set:
            module.register_buffer(name, torch.empty_like(getattr(module, name), device="cpu"), persistent=False)
        model._init_weights(module)


def logits_of(model: PreTrainedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` as a function from token ids to float32 logits, without gradients."""

    @torch.no_grad()
    def logits(input_ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids).logits.float()

    return logits


def require_tensor(state_dict: Mapping[str, torch.Tensor], name: str, what: str) -> torch.Tensor:
    if name not in state_dict:
        raise ConversionError(f"The {what} checkpoint has no tensor {name!r}.")
    return state_dict[name]


def refuse_unless_expressible(target: Format, config: TinyLMConfig) -> None:
    """Raise naming every setting of `config` that `target` cannot express."""
    problems = target.refusals(config)
    if problems:
        raise ConversionError(
            f"This TinyLM config cannot be expressed as {target.label}, which differs in: " + "; ".join(problems) + "."
        )


class TransformersFolder(Format):
    """A format written as a Transformers model folder by `model_class.save_pretrained` (TinyLM, GPT-2, Llama).

    Subclasses give the config and weight maps from TinyLM (`config_from_tinylm`, `tensors_from_tinylm`)."""

    model_class: type[PreTrainedModel]

    def config_from_tinylm(self, config: TinyLMConfig):
        raise NotImplementedError

    def tensors_from_tinylm(self, state_dict: Mapping[str, torch.Tensor], config: TinyLMConfig) -> Tensors:
        raise NotImplementedError

    def write(self, checkpoint, state_dict, output, dtype, max_shard_size) -> int:
        target_config = self.config_from_tinylm(checkpoint.config)
        tensors = dict(self.tensors_from_tinylm(state_dict, checkpoint.config))
        model = build_model(self.model_class, target_config, tensors)
        if checkpoint.generation_config is not None:
            model.generation_config = checkpoint.generation_config
        model.save_pretrained(output, max_shard_size=max_shard_size)
        if checkpoint.tokenizer is not None:
            checkpoint.tokenizer.save_pretrained(output)
        return model.num_parameters()

    def reload(self, output, dtype):
        return logits_of(self.model_class.from_pretrained(output, dtype=getattr(torch, dtype)))

    def card_fields(self, checkpoint, output):
        return {"target_name": self.name, "target_label": self.label, "model_class": self.model_class.__name__}



def mismatches(config: TinyLMConfig, required: tuple[tuple[str, object], ...], label: str) -> list[str]:
    """Each `(field, value)` of `required` that `config` does not have, as `field=value (<label> needs value)`."""
    return [
        f"{field}={getattr(config, field)!r} ({label} needs {value!r})"
        for field, value in required
        if getattr(config, field) != value
    ]


def check_tensors(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    tied: bool,
    ties: Mapping[str, str],
    config_hint: str = "the config",
) -> None:
    """Refuse a state dict that misses, misshapes or adds a tensor of `expected` (name -> shape), naming each one.

    `ties` maps each output head to the embedding it can be tied to: with `tied`, the head may be absent, or present
    and equal to its embedding; otherwise it is required. `config_hint` names the config fields that fix shapes."""
    missing = [
        name if tied or name not in ties else f"{name} (required: the config has tie_word_embeddings=False)"
        for name in expected
        if name not in state_dict and not (tied and name in ties)
    ]
    if missing:
        raise ConversionError(f"The checkpoint is missing {len(missing)} {what} tensor(s): {name_list(missing)}.")
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise ConversionError(
            f"The checkpoint has tensor(s) a {what} model with this config does not: {name_list(unexpected)}. "
            f"Is it a {what} checkpoint with a matching config?"
        )
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point():
            raise ConversionError(f"Tensor {name!r} has dtype {tensor.dtype}; {what} weights are floating point.")
        if tuple(tensor.shape) != tuple(expected[name]):
            raise ConversionError(
                f"Tensor {name!r} has shape {list(tensor.shape)}, but {config_hint} requires {list(expected[name])}."
            )
    for head, embedding in ties.items():
        if tied and head in state_dict and not torch.equal(state_dict[head], state_dict[embedding]):
            raise ConversionError(
                f"The config ties the output head to the embeddings (tie_word_embeddings=True), but the checkpoint's "
                f"`{head}` differs from `{embedding}`. Set \"tie_word_embeddings\": false in config.json if the head "
                "is meant to be separate."
            )
