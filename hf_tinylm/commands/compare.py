"""`tinylm compare`: train architecture variants on the same data and budget, and report how they compare."""

from ..training.settings import CompareSettings

HELP = "train architecture variants on the same data, tokenizer, budget and seed, and compare them"
DESCRIPTION = (
    "Train several TinyLM variants from scratch on the same data, tokenizer, token budget and seed, then write a "
    "report to OUTPUT/comparison.md: a table (parameters, tokens seen, held-out loss and perplexity, training "
    "tokens/s, peak memory, decode tokens/s) and a plot of held-out loss against tokens seen (comparison.png). "
    "Variants are presets or config files (--variants small llama-small), or a --base changed by --vary "
    "(--base small --vary position_embedding_type=learned,rotary,alibi --vary norm_type=layernorm,rmsnorm: every "
    "combination, or --one-at-a-time). Each variant's model folder is kept in OUTPUT/variants/ and loads like any "
    "other. --resume continues an interrupted comparison without training finished variants again."
)
SETTINGS = CompareSettings


def run(settings: CompareSettings) -> int:
    from ..training.compare import compare, results_table

    report = compare(settings)
    print(results_table(report["variants"]))
    for note in report["parameter_matching"]:
        print(f"params-matched: {note}")
    print(f"report: {settings.output / 'comparison.md'}")
    return 0
