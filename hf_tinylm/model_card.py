"""Model cards: the `README.md` of a saved model folder, rendered from a template in `model_cards/templates/`."""

from importlib import resources
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .configuration_tinylm import MIN_TRANSFORMERS_VERSION


def render_model_card(template: str, card_data: ModelCardData, **fields: Any) -> ModelCard:
    """Fill `model_cards/templates/<template>.md` (Jinja) with the YAML metadata `card_data` and `fields`; every
    template may also name `min_transformers_version`, the oldest release TinyLM's saved code runs on."""
    path = resources.files("hf_tinylm.model_cards").joinpath("templates", f"{template}.md")
    if not path.is_file():
        raise FileNotFoundError(f"No model-card template named {template!r} (looked for {path}).")
    with resources.as_file(path) as template_path:
        return ModelCard.from_template(
            card_data, template_path=str(template_path), min_transformers_version=MIN_TRANSFORMERS_VERSION, **fields
        )
