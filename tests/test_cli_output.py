"""What the commands print and leave behind: readable log lines, no bars with `--no-progress`, only the result with
`--quiet`, checkpoints removed after success; and `--config-overrides` meaning the same for a preset and a config."""

import json
import re

import pytest

from cli_helpers import TINY_OVERRIDES, TINY_TRAIN_ARGS, make_tiny_model, run_cli
from hf_tinylm import TinyLMConfig
from hf_tinylm.cli import main
from hf_tinylm.training.train import _base_config

STEP_LINE = re.compile(r"^step [ \d]+/4  loss \d+\.\d{4}  lr \d\.\d\de-\d\d  grad norm \d+\.\d{3}  [\d,]+ tokens  "
                       r"[\d,]+ tokens/s  epoch \d+\.\d\d$")
EVAL_LINE = re.compile(r"^step [ \d]+/4  held-out loss \d+\.\d{4}  perplexity \d+\.\d\d  \(\d+\.\d s\)$")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(80)))
    return path


def train_argv(corpus, output, *extra):
    return ["train", "--data", str(corpus), *TINY_TRAIN_ARGS, "--max-steps", "4", "-o", str(output), *extra]


def test_no_progress_prints_no_bars_and_one_readable_line_per_log_step(corpus, tmp_path):
    done = run_cli(*train_argv(corpus, tmp_path / "out", "--logging-steps", "1", "--eval-steps", "2"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no bars, no warnings
    lines = done.stdout.splitlines()
    assert sum(bool(STEP_LINE.match(line)) for line in lines) == 4, done.stdout
    assert sum(bool(EVAL_LINE.match(line)) for line in lines) == 3, done.stdout  # before, at step 2, at step 4
    assert "\r" not in done.stdout and "{" not in done.stdout


def test_output_to_a_pipe_has_no_empty_lines_from_progress_bars(corpus, tmp_path):
    """Without --no-progress, bars that only a terminal shows leave nothing in a log (the BPE trainer's printed
    empty lines)."""
    done = run_cli("train", "--data", str(corpus), "--preset", "tiny", "--config-overrides", TINY_OVERRIDES,
                   "--tokenizer", "bpe", "--vocab-size", "300", "--block-size", "32", "--batch-size", "4",
                   "--max-steps", "2", "--validation-split", "0.001", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "" not in done.stdout.splitlines(), done.stdout


def test_the_final_evaluation_runs_once_when_eval_steps_divides_max_steps(corpus, tmp_path):
    assert main(train_argv(corpus, tmp_path / "out", "--eval-steps", "2")) == 0
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_loss" in entry] == [0, 2, 4]


def test_quiet_prints_only_the_result(corpus, tmp_path):
    done = run_cli(*train_argv(corpus, tmp_path / "out", "--quiet"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[0].startswith("held-out perplexity: ")
    assert done.stdout.splitlines()[1:] == [f"saved {tmp_path / 'out'}"]


def test_checkpoints_are_deleted_after_success_unless_kept(corpus, tmp_path):
    assert main(train_argv(corpus, tmp_path / "out", "--save-steps", "2")) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out-checkpoints").exists()
    assert main(train_argv(corpus, tmp_path / "kept", "--save-steps", "2", "--keep-checkpoints")) == 0
    assert sorted(p.name for p in (tmp_path / "kept-checkpoints").glob("checkpoint-*")) == ["checkpoint-2",
                                                                                          "checkpoint-4"]


def test_generate_and_convert_print_no_bars_with_no_progress(tmp_path):
    model = make_tiny_model(tmp_path / "model")
    generated = run_cli("generate", str(model), "hello", "--max-new-tokens", "4", "--seed", "0", "--no-progress")
    assert generated.returncode == 0, generated.stderr
    assert generated.stderr == ""
    converted = run_cli("convert", str(model), str(tmp_path / "gpt2"), "--to", "gpt2", "--no-progress")
    assert converted.returncode == 0, converted.stderr
    assert converted.stderr == ""
    assert converted.stdout.startswith(f"Wrote {tmp_path / 'gpt2'} (gpt2, float32, ")


# ----------------------------------------------------------------------------------------------- config overrides


def test_overriding_a_saved_config_derives_its_sizes_again_as_a_preset_does(tmp_path):
    """Overriding hidden_size of a saved `small` config gives the model `--preset small` gives with that override:
    head_dim and the MLP width follow the new width instead of keeping the saved ones."""
    TinyLMConfig.from_preset("small").save_pretrained(tmp_path)
    from_config, _ = _base_config(None, None, str(tmp_path / "config.json"), {"hidden_size": 512})
    from_preset, _ = _base_config(None, "small", None, {"hidden_size": 512})
    assert (from_config.head_dim, from_config.intermediate_size) == (64, 2048)
    architecture = [name for name in TinyLMConfig.__dataclass_fields__ if not name.endswith("_token_id")]
    assert {n: getattr(from_config, n) for n in architecture} == {n: getattr(from_preset, n) for n in architecture}


def test_sizes_set_explicitly_survive_an_override():
    llama = TinyLMConfig.from_preset("llama-small")  # intermediate_size 704 and 2 key/value heads, not derived
    wider = llama.with_overrides(num_hidden_layers=2)
    assert (wider.intermediate_size, wider.num_key_value_heads) == (704, 2)
    assert llama.with_overrides(head_dim=16, hidden_size=512).head_dim == 16
