"""`tinylm train` on real text: loss falls from scratch and when fine-tuning, `--resume` is exact, the output
folder is Hub-ready; plus the data pipeline and tokenizers it is built on."""

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import TrainerCallback
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

from cli_helpers import TINY_TRAIN_ARGS, loss_log, make_tiny_model, train_losses, weights
from hf_tinylm.cli import main
from hf_tinylm.training import data as data_lib
from hf_tinylm.training.tokenizer import byte_level_tokenizer, train_bpe_tokenizer


@pytest.fixture(scope="module")
def scratch_run(shared_data, tmp_path_factory):
    """30 steps from scratch on TinyShakespeare (the folder, found through --data's folder search)."""
    output = tmp_path_factory.mktemp("scratch") / "model"
    code = main(["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--max-steps", "30",
                 "--logging-steps", "5", "--save-steps", "0", "-o", str(output)])
    assert code == 0
    return output


def test_training_from_scratch_lowers_loss_and_held_out_perplexity(scratch_run):
    losses = train_losses(scratch_run)
    results = json.loads((scratch_run / "all_results.json").read_text())
    assert losses[-1] < losses[0] - 0.3
    assert results["perplexity_after"] < results["perplexity_before"]


def test_output_folder_is_hub_ready(scratch_run):
    """Weights, config with auto_map, code files, tokenizer, generation config and a card with the facts."""
    names = {p.name for p in scratch_run.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "configuration_tinylm.py",
            "modeling_tinylm.py", "tokenizer.json", "tokenizer_config.json", "README.md",
            "trainer_state.json", "all_results.json"} <= names
    config = json.loads((scratch_run / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_tinylm.TinyLMForCausalLM"
    # Pad is EOS for generation only: in the model config it would freeze EOS's embedding row (padding_idx).
    generation = json.loads((scratch_run / "generation_config.json").read_text())
    assert config["pad_token_id"] == config["eos_token_id"] == generation["pad_token_id"] == 256  # GPT-2: pad = EOS
    card = (scratch_run / "README.md").read_text()
    results = json.loads((scratch_run / "all_results.json").read_text())
    assert "pipeline_tag: text-generation" in card
    assert f"{results['perplexity_after']:.2f}" in card and "trust_remote_code=True" in card
    assert "tinyshakespeare" in card and "| steps | 30 " in card


def test_trained_folder_card_shows_the_loss_and_perplexity_curves(scratch_run):
    with Image.open(scratch_run / "training_curves.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert {(31, 119, 180), (255, 127, 14)} <= colours  # the training-loss and held-out lines
    card = (scratch_run / "README.md").read_text()
    assert "![Training and held-out loss, and held-out perplexity, against tokens seen](training_curves.png)" in card


def test_results_carry_training_speed_and_peak_memory(scratch_run):
    results = json.loads((scratch_run / "all_results.json").read_text())
    assert 0 < results["train_tokens_per_second"] < 1e9
    assert 100 < results["peak_memory_mb"] < 1e6  # a CPU run: the process's resident peak, torch included


def test_report_to_sends_the_logs_to_the_trainer_logger_named(shared_data, tmp_path, monkeypatch):
    """`--report-to tensorboard` adds Transformers' logger of that name; a recording stand-in takes its place."""
    received = []

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            received.append(dict(logs))

    monkeypatch.setitem(INTEGRATION_TO_CALLBACK, "tensorboard", Recorder)
    output = tmp_path / "model"
    assert main(["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--max-steps", "2",
                 "--logging-steps", "1", "--save-steps", "0", "--report-to", "tensorboard", "-o", str(output)]) == 0
    assert [entry["loss"] for entry in received if "loss" in entry] == train_losses(output)
    assert sum("eval_loss" in entry for entry in received) == 2  # before and after


def test_fine_tuning_a_trained_folder_lowers_loss_on_new_text(scratch_run, shared_data, tmp_path):
    """Fine-tune the Shakespeare model on WikiText: the base model's tokenizer is reused and loss falls."""
    output = tmp_path / "tuned"
    code = main(["train", "--model", str(scratch_run), "--data",
                 str(shared_data / "wikitext-2-raw-test" / "wiki.test.raw"), "--block-size", "32", "--batch-size", "4",
                 "--learning-rate", "3e-3", "--validation-split", "0.002", "--max-steps", "20", "--logging-steps", "4",
                 "--save-steps", "0", "--no-progress", "-o", str(output)])
    assert code == 0
    losses = train_losses(output)
    assert losses[-1] < losses[0]
    base_vocab = json.loads((scratch_run / "tokenizer.json").read_text())["model"]["vocab"]
    assert json.loads((output / "tokenizer.json").read_text())["model"]["vocab"] == base_vocab
    assert "fine-tuned from" in (output / "README.md").read_text()


def test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run_exactly(shared_data, tmp_path):
    """Run 12 steps with checkpoints every 6; start again from a copy of checkpoint-6 only. Dropout is on, so
    the restored RNG state matters; final weights must be bit-identical and the loss log identical."""
    args = ["--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--config-overrides",
            "hidden_size=32,num_hidden_layers=2,intermediate_size=64,max_position_embeddings=64,"
            "residual_dropout=0.1,embedding_dropout=0.1",
            "--max-steps", "12", "--save-steps", "6", "--logging-steps", "2", "--eval-steps", "6"]
    assert main(["train", *args, "-o", str(tmp_path / "full"), "--keep-checkpoints"]) == 0
    (tmp_path / "cut-checkpoints").mkdir()
    shutil.copytree(tmp_path / "full-checkpoints" / "checkpoint-6", tmp_path / "cut-checkpoints" / "checkpoint-6")
    assert main(["train", *args, "-o", str(tmp_path / "cut"), "--resume"]) == 0

    full, resumed = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[name], resumed[name]) for name in full)
    assert loss_log(tmp_path / "cut") == loss_log(tmp_path / "full")
    assert len(train_losses(tmp_path / "full")) == 7  # the first step, then every 2 steps


def test_training_reuses_checkpoint_folder_only_with_resume_or_overwrite(shared_data, tmp_path, capsys):
    """Leftover checkpoints of an earlier run are neither mixed into a new run nor silently deleted."""
    (tmp_path / "model-checkpoints" / "checkpoint-5").mkdir(parents=True)
    code = main(["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--max-steps", "2",
                 "-o", str(tmp_path / "model")])
    assert code == 1
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "model-checkpoints" / "checkpoint-5").is_dir()
    assert not (tmp_path / "model").exists()


def test_text_lines_keep_line_breaks_and_json_records_end_with_eos(tmp_path):
    (tmp_path / "a.txt").write_text("ab\ncd\n")
    (tmp_path / "b.jsonl").write_text('{"body": "xy"}\n{"body": "z"}\n')
    tokenizer = byte_level_tokenizer()
    text = data_lib.load_text_dataset(data_lib.resolve_data_files([tmp_path / "a.txt"]))
    assert "".join(text["text"]) == "ab\ncd\n"
    records = data_lib.load_text_dataset([tmp_path / "b.jsonl"], text_column="body")
    blocks = data_lib.tokenize_and_pack(records, tokenizer, block_size=3)
    eos = tokenizer.eos_token_id
    assert blocks["input_ids"] == [tokenizer("xy")["input_ids"] + [eos]]  # "z"+EOS is a short remainder: dropped
    assert blocks["labels"] == blocks["input_ids"]


def test_held_out_blocks_are_the_contiguous_tail(tmp_path):
    (tmp_path / "t.txt").write_text("".join(chr(97 + i % 26) for i in range(400)))
    blocks = data_lib.tokenize_and_pack(data_lib.load_text_dataset([tmp_path / "t.txt"]), byte_level_tokenizer(), 20)
    train, held_out = data_lib.split_blocks(blocks, 0.1)
    assert len(train) == 18 and len(held_out) == 2
    assert held_out["input_ids"] == blocks["input_ids"][18:]


def test_folders_are_searched_for_text_files_and_errors_name_the_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("x")
    (tmp_path / "skip.bin").write_bytes(b"\0")
    assert data_lib.resolve_data_files([tmp_path]) == [tmp_path / "sub" / "x.txt"]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data_lib.resolve_data_files([tmp_path / "nope.txt"])
    with pytest.raises(ValueError, match=r"\*\.md"):
        data_lib.resolve_data_files([tmp_path], patterns=["*.md"])


def test_byte_level_tokenizer_round_trips_any_text_and_has_eos_and_pad():
    tokenizer = byte_level_tokenizer()
    text = "naïve café — 東京 🙂\n\ttabs"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert len(tokenizer) == 257 and tokenizer.pad_token_id == tokenizer.eos_token_id == 256


def test_bpe_trained_on_the_corpus_learns_merges_up_to_the_requested_size_and_compresses_it():
    """The vocabulary holds the 256 bytes, EOS and learned merges; it stops early when no pair is left."""
    corpus = ["the quick brown fox jumps over the lazy dog\n" * 50]
    tokenizer = train_bpe_tokenizer([corpus], vocab_size=300, show_progress=False)
    ids = tokenizer(corpus[0])["input_ids"]
    assert 257 < len(tokenizer) <= 300 and tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token is not None
    assert tokenizer.decode(ids) == corpus[0] and len(ids) < len(corpus[0]) / 2


def test_fine_tuning_resizes_embeddings_for_a_larger_tokenizer(tmp_path):
    """A --tokenizer with more tokens than the model's vocabulary grows the embeddings instead of failing."""
    base = make_tiny_model(tmp_path / "base", vocab_size=200, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    (tmp_path / "t.txt").write_text("hello world, " * 200)
    code = main(["train", "--model", str(base), "--tokenizer", str(base), "--data", str(tmp_path / "t.txt"),
                 "--block-size", "16", "--batch-size", "2", "--max-steps", "2", "--save-steps", "0",
                 "--no-progress", "--validation-split", "0.1", "-o", str(tmp_path / "out")])
    assert code == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"] == 257


def test_gradient_accumulation_and_checkpointing_keep_the_loss_curve(shared_data, tmp_path):
    """Batch 2 x 2 accumulation steps with activation checkpointing follows batch 4 without: the flags reach the
    Trainer and neither changes the maths."""
    common = ["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--max-steps", "4",
              "--logging-steps", "1", "--save-steps", "0"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    assert main([*common, "--batch-size", "2", "--gradient-accumulation-steps", "2", "--gradient-checkpointing",
                 "-o", str(tmp_path / "accumulated")]) == 0
    plain, accumulated = train_losses(tmp_path / "plain"), train_losses(tmp_path / "accumulated")
    assert len(plain) == 4
    assert max(abs(a - b) for a, b in zip(plain, accumulated)) < 1e-5



def test_compiled_training_follows_the_eager_loss_curve_and_saves_plain_weights(shared_data, tmp_path):
    """`--compile` reaches the Trainer (inductor) without changing the maths, and the saved folder holds the model's
    own weight names, not the compiled wrapper's."""
    common = ["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--max-steps", "3",
              "--logging-steps", "1", "--save-steps", "0"]
    assert main([*common, "-o", str(tmp_path / "eager")]) == 0
    assert main([*common, "--compile", "-o", str(tmp_path / "compiled")]) == 0
    eager, compiled = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert len(eager) == 3
    assert max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-4
    assert weights(tmp_path / "compiled").keys() == weights(tmp_path / "eager").keys()
    assert "| compiled | yes (torch.compile, inductor) |" in (tmp_path / "compiled" / "README.md").read_text()
    assert "| compiled | no |" in (tmp_path / "eager" / "README.md").read_text()

def test_bf16_mixed_precision_trains_and_saves_float32_weights(shared_data, tmp_path):
    assert main(["train", "--data", str(shared_data / "tinyshakespeare"), *TINY_TRAIN_ARGS, "--max-steps", "6",
                 "--logging-steps", "2", "--save-steps", "0", "--bf16", "-o", str(tmp_path / "bf16")]) == 0
    losses = train_losses(tmp_path / "bf16")
    assert losses[-1] < losses[0]
    assert all(t.dtype == torch.float32 for t in weights(tmp_path / "bf16").values())
    assert "| precision | bf16 |" in (tmp_path / "bf16" / "README.md").read_text()


def test_from_scratch_tokenizer_gets_the_vocabulary_size_of_the_resolved_config(shared_data, tmp_path):
    """A vocab_size set through --config-overrides (not the preset's) decides the BPE trained on the data."""
    output = tmp_path / "model"
    args = [*TINY_TRAIN_ARGS]
    args[args.index("--config-overrides") + 1] += ",vocab_size=400"
    code = main(["train", "--data", str(shared_data / "tinyshakespeare"), *args, "--max-steps", "2",
                 "--save-steps", "0", "-o", str(output)])
    assert code == 0
    assert json.loads((output / "config.json").read_text())["vocab_size"] == 400
