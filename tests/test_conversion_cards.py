"""The shipped model cards of the four GPT-2 sizes: valid Hub metadata and parameter counts that match the models."""

from importlib import resources

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import GPT2Config, GPT2LMHeadModel

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM

SIZES = {  # OpenAI's shapes: n_embd, n_layer, n_head
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}


@pytest.mark.parametrize("name", SIZES)
def test_size_card_has_hub_metadata_and_the_parameter_count_of_both_models(name):
    card = ModelCard(resources.files("hf_tinylm.model_cards").joinpath(f"{name}.md").read_text(encoding="utf-8"))
    n_embd, n_layer, n_head = SIZES[name]
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head)).num_parameters()
        tinylm = TinyLMForCausalLM(TinyLMConfig.from_preset(name)).num_parameters()

    assert gpt2 == tinylm
    assert f"{gpt2:,}" in card.text
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model == f"openai-community/{name}" and card.data.license == "mit"
    assert f"tinylm convert openai-community/{name}" in card.text
    assert "max |Δlogits|" in card.text
