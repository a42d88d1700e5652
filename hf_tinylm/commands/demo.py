"""`tinylm demo`: the main job end to end, offline: train, save, reload in a fresh process, generate."""

from ..training.demo import DemoSettings

HELP = "train a small TinyLM from scratch offline, reload it and generate (a few minutes on a CPU)"
DESCRIPTION = (
    "The main job end to end, offline: train a small TinyLM from scratch (BPE tokenizer trained on the text) on "
    "Python's own standard-library sources (or --text), show loss and held-out perplexity falling, save the "
    "Hub-ready folder, reload it in a fresh process with AutoModelForCausalLM.from_pretrained(..., "
    "trust_remote_code=True) and generate a sample through pipeline. An existing output folder is replaced only if "
    "it holds a TinyLM model (an earlier demo) or with --overwrite."
)
SETTINGS = DemoSettings


def run(settings: DemoSettings) -> int:
    from ..training.demo import run_demo

    run_demo(settings)
    return 0
