"""Bad input to `tinylm`: one clear line on stderr, a non-zero exit, and nothing half-written on disk."""

import json

import pytest

from cli_helpers import TINY_TRAIN_ARGS, make_tiny_model, run_cli
from hf_tinylm.cli import main


def _assert_nothing_written(tmp_path, name="out"):
    assert not (tmp_path / name).exists()
    assert not (tmp_path / f"{name}-checkpoints").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.partial-")]


def test_missing_data_file_exits_1_with_the_path_on_stderr(tmp_path):
    """In a real process: the message format, stderr and exit status are the command's contract."""
    result = run_cli("train", "--data", str(tmp_path / "missing.txt"), *TINY_TRAIN_ARGS, "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == f"tinylm: error: Data file or folder not found: {tmp_path / 'missing.txt'}"
    assert result.stdout == ""
    _assert_nothing_written(tmp_path)


def test_usage_errors_exit_2_and_help_lists_every_command():
    usage = run_cli("train", "--data", "x.txt")  # --output missing
    assert usage.returncode == 2 and "the following arguments are required: --output" in usage.stderr
    helped = run_cli("--help")
    assert helped.returncode == 0
    assert all(name in helped.stdout for name in ("train", "generate", "info", "demo", "convert"))


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "whitespace"])
def test_empty_corpus_is_refused(tmp_path, capsys, content):
    (tmp_path / "empty.txt").write_text(content)
    code = main(["train", "--data", str(tmp_path / "empty.txt"), *TINY_TRAIN_ARGS, "-o", str(tmp_path / "out")])
    assert code == 1
    assert "corpus is empty" in capsys.readouterr().err
    _assert_nothing_written(tmp_path)


def test_corpus_shorter_than_two_blocks_is_refused(tmp_path, capsys):
    (tmp_path / "short.txt").write_text("just a few words\n")
    code = main(["train", "--data", str(tmp_path / "short.txt"), *TINY_TRAIN_ARGS, "-o", str(tmp_path / "out")])
    assert code == 1
    assert "smaller --block-size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_model_folder_that_is_not_tinylm_is_refused_by_every_command(tmp_path, capsys):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "t.txt").write_text("some text\n" * 100)
    commands = [
        ["train", "--model", str(gpt2), "--data", str(tmp_path / "t.txt"), "-o", str(tmp_path / "out")],
        ["generate", str(gpt2), "hello"],
        ["info", str(gpt2)],
    ]
    for argv in commands:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "is not a TinyLM model folder (its model_type is 'gpt2')" in err and "tinylm convert" in err
    _assert_nothing_written(tmp_path)
    assert main(["info", str(tmp_path / "t.txt")]) == 1  # a file, not a folder
    assert "is not a TinyLM model folder: it is a file" in capsys.readouterr().err


def test_existing_output_folder_is_kept_without_overwrite(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("some text\n" * 100)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(["train", "--data", str(tmp_path / "t.txt"), *TINY_TRAIN_ARGS, "-o", str(tmp_path / "out")])
    assert code == 1
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_failure_during_training_leaves_no_output_folder(tmp_path, capsys, monkeypatch):
    """An error after training started (here: in the Trainer) removes the staging folder; only checkpoints stay."""
    from transformers import Trainer

    def broken_train(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Trainer, "train", broken_train)
    (tmp_path / "t.txt").write_text("some text\n" * 100)
    code = main(["train", "--data", str(tmp_path / "t.txt"), *TINY_TRAIN_ARGS, "-o", str(tmp_path / "out")])
    assert code == 1
    assert "disk full" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_preset_and_config_field_are_named(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("some text\n" * 100)
    assert main(["train", "--data", str(tmp_path / "t.txt"), "--preset", "huge", "-o", str(tmp_path / "o")]) == 1
    assert "Unknown preset 'huge'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "t.txt"), "--config-overrides", "hidden=3", "-o",
                 str(tmp_path / "o")]) == 1
    assert "Unknown config field(s) in --config-overrides: hidden" in capsys.readouterr().err


def test_generate_needs_a_tokenizer(tmp_path, capsys):
    folder = make_tiny_model(tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    assert main(["generate", str(folder), "hi"]) == 1
    assert "has no tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["generate", "model", "hi", "--temperature", "0"], "argument --temperature: must be a positive number, got 0"),
        (["generate", "model", "hi", "--temperature", "nan"], "argument --temperature: must be a positive number"),
        (["generate", "model", "hi", "--top-p", "0"], "argument --top-p: must lie in (0, 1], got 0"),
        (["generate", "model", "hi", "--top-p", "1.5"], "argument --top-p: must lie in (0, 1], got 1.5"),
        (["generate", "model", "hi", "--top-k", "-1"], "argument --top-k: must be 0 or a positive integer, got -1"),
        (["generate", "model", "hi", "--repetition-penalty", "0"], "argument --repetition-penalty: must be a positive"),
        (["generate", "model", "hi", "--num-beams", "0"], "argument --num-beams: must be a positive integer, got 0"),
        (["train", "-o", "out", "--learning-rate", "0"], "argument --learning-rate: must be a positive number"),
        (["train", "-o", "out", "--warmup-steps", "-5"], "argument --warmup-steps: must be 0 or a positive integer"),
        (["train", "-o", "out", "--save-total-limit", "0"], "argument --save-total-limit: must be a positive integer"),
    ],
    ids=["temperature-0", "temperature-nan", "top-p-0", "top-p-above-1", "top-k-negative", "repetition-penalty-0",
         "beams-0", "learning-rate", "warmup", "save-total-limit"],
)
def test_settings_out_of_range_are_usage_errors_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
