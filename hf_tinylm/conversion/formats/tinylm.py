"""TinyLM folders: the hub every conversion passes through. Read as a source for export (`--to gpt2`, ...), written
as the target of every import (the default `--to tinylm`)."""

from pathlib import Path

from ...configuration_tinylm import TinyLMConfig
from ...model_folder import check_tinylm_checkpoint
from ...modeling_tinylm import TinyLMForCausalLM
from ..base import Checkpoint, TransformersFolder, logits_of
from ..sources import config_model_type, load_generation_config, load_tokenizer, source_license


class TinyLMFormat(TransformersFolder):
    name = "tinylm"
    label = "TinyLM"
    signature = 'a folder whose config.json has model_type "tinylm"'
    card_tags = ("tinylm", "custom_code")
    model_class = TinyLMForCausalLM
    card_template = "converted_to_tinylm"

    def detect(self, path: Path) -> bool:
        return config_model_type(path) == "tinylm"

    def read(self, path: Path, repo_id: str | None, progress: bool) -> Checkpoint:
        config = TinyLMConfig.from_pretrained(path)
        check_tinylm_checkpoint(path, config)
        model = TinyLMForCausalLM.from_pretrained(path, dtype="auto")
        state_dict = model.state_dict()
        if config.tie_word_embeddings:
            del state_dict["lm_head.weight"]  # the embedding under a second name
        name = repo_id or path.name
        return Checkpoint(
            format=self.name,
            name=name,
            description=f"the TinyLM checkpoint `{name}`",
            config=config,
            tensors=lambda: iter(state_dict.items()),
            num_tensors=len(state_dict),
            dtype=model.dtype,
            reference=lambda: logits_of(model.float()),
            reference_name="the source TinyLM model",
            tokenizer=load_tokenizer(path),
            generation_config=load_generation_config(path),
            repo_id=repo_id,
            license=source_license(path),
        )

    def config_from_tinylm(self, config: TinyLMConfig) -> TinyLMConfig:
        return config

    def tensors_from_tinylm(self, state_dict, config):
        return iter(state_dict.items())


FORMAT = TinyLMFormat()
