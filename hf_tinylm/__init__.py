"""hf_tinylm: a GPT-style decoder-only language model family native to Hugging Face Transformers.

Importing the package registers TinyLM with `AutoConfig`, `AutoModel`, `AutoModelForCausalLM` and the task-head Auto
classes (sequence classification, token classification, question answering), and, when PEFT is installed, gives
PEFT TinyLM's default LoRA targets.
"""

import importlib.util

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

# PEFT chooses LoRA's default target modules by model type from its own table: TinyLM's are the query and value
# projections, as PEFT's entry for Llama names them.
if importlib.util.find_spec("peft") is not None:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault(TinyLMConfig.model_type, ["q_proj", "v_proj"])

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
