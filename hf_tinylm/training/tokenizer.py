"""Tokenizers for training: the model's own, a byte-level one, or a byte-level BPE trained on the corpus.

Every tokenizer returned here has an EOS token (it separates documents) and a pad token (the EOS, as in GPT-2).
"""

import sys
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
BYTE_VOCAB_SIZE = 257  # 256 bytes + EOS


def load_tokenizer(path: str | Path):
    """The tokenizer saved in `path` (a model or tokenizer folder), with EOS and pad ensured."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as error:
        raise ValueError(f"No usable tokenizer in {path}: {error}") from error
    return ensure_special_tokens(tokenizer)


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (GPT-2's byte-to-unicode alphabet, no merges) plus EOS: 257 tokens, any text."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    return _wrap(backend)


def train_bpe_tokenizer(texts: Iterable[list[str]], vocab_size: int, show_progress: bool = True):
    """A byte-level BPE (GPT-2's scheme) of `vocab_size` tokens, EOS included, trained on batches of `texts`."""
    if vocab_size <= BYTE_VOCAB_SIZE:
        raise ValueError(f"A BPE vocabulary must exceed the {BYTE_VOCAB_SIZE} byte tokens; got {vocab_size} "
                         "(use --tokenizer byte for a byte-level model).")
    backend = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        # The trainer's bar prints empty lines to a stdout that is not a terminal (a log file, a pipe).
        show_progress=show_progress and sys.stdout.isatty(),
    )
    _set_byte_level(backend)
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrap(backend)


def _set_byte_level(backend: Tokenizer) -> None:
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    _set_byte_level(backend)  # already set before BPE training; setting it again is harmless
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({"eos_token": EOS})
    return ensure_special_tokens(tokenizer)


def ensure_special_tokens(tokenizer):
    """Give the tokenizer an EOS (added as `<|endoftext|>` if missing) and use EOS as pad and BOS when unset."""
    if tokenizer.eos_token is None:
        tokenizer.add_special_tokens({"eos_token": EOS})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return tokenizer
