"""Model-card templates and the cards of the four GPT-2 sizes (shipped as package data); those cards are rendered
from `gpt2_measurements.json` by `scripts/model_cards/render_gpt2_cards.py`, never edited by hand."""
