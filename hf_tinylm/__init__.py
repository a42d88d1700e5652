"""hf_tinylm: a GPT-style decoder-only language model family native to Hugging Face Transformers.

Importing the package registers TinyLM with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_tinylm import PRESETS, TinyLMConfig
from .modeling_tinylm import TinyLMForCausalLM, TinyLMModel, TinyLMPreTrainedModel

AutoConfig.register(TinyLMConfig.model_type, TinyLMConfig)
AutoModel.register(TinyLMConfig, TinyLMModel)
AutoModelForCausalLM.register(TinyLMConfig, TinyLMForCausalLM)

__all__ = ["PRESETS", "TinyLMConfig", "TinyLMModel", "TinyLMForCausalLM", "TinyLMPreTrainedModel"]
