"""Model-card templates and the cards of the converted GPT-2 checkpoints (shipped as package data)."""
