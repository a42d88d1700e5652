"""`tinylm info`: the architecture and parameter counts of a TinyLM folder or preset, or the list of presets."""

from ..info import InfoSettings

HELP = "architecture and parameter counts of a TinyLM folder or preset"
DESCRIPTION = (
    "Show the architecture of a TinyLM model folder or preset on one screen, with parameter counts (tied weights "
    "counted once) broken down into embeddings, each block, final norm and head. Without an argument, list the "
    "presets."
)
SETTINGS = InfoSettings


def run(settings: InfoSettings) -> int:
    from ..info import describe, list_presets

    print(describe(settings.target, settings.json) if settings.target else list_presets(settings.json))
    return 0
