"""`tinylm train`: pre-train or fine-tune a TinyLM with the Transformers `Trainer`."""

import os

from ..training.settings import TrainSettings

HELP = "pre-train from a preset or config, or fine-tune a TinyLM folder, with Trainer"
DESCRIPTION = (
    "Pre-train a TinyLM from a preset or config.json, or fine-tune a TinyLM folder, with the Transformers Trainer. "
    "Text is tokenized, packed into blocks and split into training and held-out blocks; the held-out perplexity is "
    "reported before and after. Checkpoints go to --checkpoint-dir (default OUTPUT-checkpoints) for --resume and "
    "are deleted once the final Hub-ready folder is written, which happens only when training succeeded. Runs under "
    "torchrun / accelerate launch for DDP or FSDP."
)
SETTINGS = TrainSettings


def run(settings: TrainSettings) -> int:
    from ..training.train import train

    report = train(settings)
    if int(os.environ.get("RANK", "0")) == 0:  # the main process of a distributed run
        print(f"held-out perplexity: {report.perplexity_before:.2f} before -> {report.perplexity_after:.2f} after "
              f"({report.steps} steps, {report.tokens_seen:,} tokens, final train loss {report.train_loss:.4f})")
        print(f"saved {report.output}")
    return 0
