"""`tinylm generate`: continue a prompt with a TinyLM folder through `pipeline("text-generation")`."""

from ..generation import GenerateSettings

HELP = "generate text with a TinyLM folder through pipeline('text-generation')"
DESCRIPTION = (
    "Continue PROMPT with the model in MODEL (a folder with weights and tokenizer) through "
    "pipeline('text-generation'), streaming tokens as they come. Decoding defaults come from the model's "
    "generation_config.json; the flags override them."
)
SETTINGS = GenerateSettings


def run(settings: GenerateSettings) -> int:
    from ..generation import generate

    generate(settings.model, " ".join(settings.prompt), settings)
    return 0
