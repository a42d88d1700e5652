"""Training data: local text / jsonl files or folders, or a `datasets` name, tokenized and packed into blocks.

The pipeline follows Transformers' `run_clm.py`: text files are read line by line with their line breaks kept (so
concatenating the lines gives the file back), json/jsonl records are documents ended by the EOS token, everything
is tokenized with `Dataset.map` and cut into `block_size` blocks whose labels are the input ids.
"""

import fnmatch
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
from datasets import Dataset, concatenate_datasets
from datasets.exceptions import DatasetGenerationError

from .settings import DEFAULT_PATTERNS

JSON_SUFFIXES = (".json", ".jsonl")


def resolve_data_files(paths: Sequence[str | Path], patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[Path]:
    """The files named by `paths`: files as given, folders searched recursively for names matching `patterns`.

    Raises FileNotFoundError for a path that does not exist and ValueError for a folder with no matching file, so
    a typo fails before any work is done.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not _hidden(p, path) and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
            )
            if not found:
                raise ValueError(f"Folder {path} holds no file matching {', '.join(patterns)} (see --glob).")
            files.extend(found)
        else:
            raise FileNotFoundError(f"Data file or folder not found: {path}")
    return files


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts)


def load_text_dataset(
    files: Sequence[Path] = (),
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    text_column: str = "text",
) -> Dataset:
    """One `Dataset` with a `text` column and a boolean `document` column (True: end the record with EOS).

    Local text files give one row per line (line breaks kept); json/jsonl files and `datasets` names give one row
    per record, read from `text_column`. Raises ValueError if nothing but whitespace was read.
    """
    parts = []
    nonempty = [f for f in files if Path(f).stat().st_size > 0]  # `datasets` fails on a file with no rows
    text_files = [str(f) for f in nonempty if f.suffix not in JSON_SUFFIXES]
    json_files = [str(f) for f in nonempty if f.suffix in JSON_SUFFIXES]
    try:
        if text_files:
            ds = datasets.load_dataset("text", data_files=text_files, split="train", keep_linebreaks=True)
            parts.append(ds.add_column("document", [False] * len(ds)))
        if json_files:
            ds = datasets.load_dataset("json", data_files=json_files, split="train")
            parts.append(_records(ds, text_column, f"the json files {', '.join(json_files)}"))
    except DatasetGenerationError as error:
        raise ValueError(f"Could not read the data files: {error.__cause__ or error}") from error
    if dataset_name:
        try:
            ds = datasets.load_dataset(dataset_name, dataset_config, split=split)
        except (ConnectionError, FileNotFoundError, ValueError) as error:
            raise ValueError(f"Could not load the dataset {dataset_name!r} (split {split!r}): {error}") from error
        parts.append(_records(ds, text_column, f"dataset {dataset_name!r}"))
    if files and not parts:
        raise ValueError(f"The corpus is empty: {', '.join(map(str, files))} contain no text.")
    if not parts:
        raise ValueError("No training data: give --data files/folders or --dataset NAME.")
    dataset = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if not any(text.strip() for text in dataset["text"]):
        sources = ", ".join(text_files + json_files + ([dataset_name] if dataset_name else []))
        raise ValueError(f"The corpus is empty: {sources} contain no text.")
    return dataset


def _records(ds: Dataset, text_column: str, what: str) -> Dataset:
    if text_column not in ds.column_names:
        raise ValueError(f"{what} has no column {text_column!r} (columns: {', '.join(ds.column_names)}); "
                         "choose one with --text-column.")
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    ds = ds.cast_column("text", datasets.Value("string"))
    return ds.add_column("document", [True] * len(ds))


def iter_texts(dataset: Dataset, batch_size: int = 1000) -> Iterator[list[str]]:
    """Batches of raw text, for training a tokenizer on the corpus."""
    for start in range(0, len(dataset), batch_size):
        yield [t for t in dataset[start : start + batch_size]["text"] if t]


def tokenize_and_pack(dataset: Dataset, tokenizer, block_size: int) -> Dataset:
    """Token blocks of exactly `block_size` (`input_ids`, `attention_mask`, `labels`), as `run_clm.py` builds them.

    Records marked `document` get the tokenizer's EOS appended; the token stream is cut into blocks per batch of
    1,000 rows and the short remainder of each batch is dropped.
    """
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [seq + [eos] if doc else seq for seq, doc in zip(ids, batch["document"])]}

    def pack(batch):
        stream = [token for seq in batch["input_ids"] for token in seq]
        usable = len(stream) // block_size * block_size
        blocks = [stream[i : i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks], "labels": blocks}

    # The tokenizer's model_max_length is about single inputs; here long rows are cut into blocks afterwards.
    saved_max_length, tokenizer.model_max_length = tokenizer.model_max_length, int(1e30)
    try:
        tokens = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")
    finally:
        tokenizer.model_max_length = saved_max_length
    return tokens.map(pack, batched=True, desc=f"Packing into blocks of {block_size}")


def split_blocks(blocks: Dataset, validation_fraction: float) -> tuple[Dataset, Dataset]:
    """Hold out the last `validation_fraction` of the blocks (at least one): a contiguous tail, so no held-out
    text is also seen in training through overlapping blocks."""
    if len(blocks) < 2:
        raise ValueError(
            f"The corpus gives {len(blocks)} block(s) of tokens; at least 2 are needed (one for training, one "
            "held out). Use more text or a smaller --block-size."
        )
    held_out = min(len(blocks) - 1, max(1, round(len(blocks) * validation_fraction)))
    return blocks.select(range(len(blocks) - held_out)), blocks.select(range(len(blocks) - held_out, len(blocks)))
