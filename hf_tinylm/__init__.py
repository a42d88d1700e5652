"""hf_tinylm: a GPT-style decoder-only language model family native to Hugging Face Transformers.

Importing the package registers TinyLM with `AutoConfig`, `AutoModel`, `AutoModelForCausalLM` and the task-head Auto
classes (sequence classification, token classification, question answering).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_tinylm import PRESETS, TinyLMConfig
from .modeling_tinylm import (
    TinyLMForCausalLM,
    TinyLMForQuestionAnswering,
    TinyLMForSequenceClassification,
    TinyLMForTokenClassification,
    TinyLMModel,
    TinyLMPreTrainedModel,
)

AutoConfig.register(TinyLMConfig.model_type, TinyLMConfig)
AutoModel.register(TinyLMConfig, TinyLMModel)
AutoModelForCausalLM.register(TinyLMConfig, TinyLMForCausalLM)
AutoModelForSequenceClassification.register(TinyLMConfig, TinyLMForSequenceClassification)
AutoModelForTokenClassification.register(TinyLMConfig, TinyLMForTokenClassification)
AutoModelForQuestionAnswering.register(TinyLMConfig, TinyLMForQuestionAnswering)

__all__ = [
    "PRESETS",
    "TinyLMConfig",
    "TinyLMModel",
    "TinyLMForCausalLM",
    "TinyLMForSequenceClassification",
    "TinyLMForTokenClassification",
    "TinyLMForQuestionAnswering",
    "TinyLMPreTrainedModel",
]
