"""Faults and files: damaged or mismatched checkpoints, Ctrl-C and incomplete checkpoints.

Every failure is one `tinylm: error: ...` line (or `tinylm: interrupted`, exit 130) without a traceback; weights
never load through plain pickle; and no failure leaves a half-written output folder or loses the old one.
"""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY_TRAIN_ARGS, make_tiny_model, offline_env
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, Trainer

import hf_tinylm
from hf_tinylm import TinyLMForCausalLM, TinyLMModel
from hf_tinylm.cli import main
from hf_tinylm.conversion import convert as convert_module
from hf_tinylm.conversion.formats import gpt2 as gpt2_format
from hf_tinylm.conversion.tf_checkpoint import TFCheckpointReader
from hf_tinylm.model_folder import check_tinylm_checkpoint
from hf_tinylm.training import train as train_module
from hf_tinylm.training.train import _resume_checkpoint

PACKAGE = Path(hf_tinylm.__file__).parent
TF_DATA_FILE = "model.ckpt.data-00000-of-00001"
TINYLM_COMMANDS = ["convert --to gpt2", "train --model", "generate"]


# ----------------------------------------------------------------------------------------------- helpers


def error_line(capsys) -> str:
    """The `tinylm: error: ...` line, which must end stderr, be one line and come without a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and "tinylm: error: " in err, err
    message = err[err.index("tinylm: error: ") :]
    assert message.count("\n") == 1 and message.endswith("\n"), err
    return message


def assert_interrupted(capsys) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.endswith("tinylm: interrupted\n") and err.count("tinylm:") == 1, err


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary folders of `atomic_output_folder` left beside `parent / name`."""
    return [p.name for p in parent.iterdir() if p.name.startswith((f".{name}.partial-", f".{name}.old-"))]


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists() and not (tmp_path / "out-checkpoints").exists()
    assert leftovers(tmp_path, "out") == []


def assert_old_output_intact(folder: Path) -> None:
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and (folder / "keep.txt").read_text() == "old"
    assert leftovers(folder.parent, folder.name) == []


def tinylm_command(name: str, folder: Path, out: Path, corpus: Path) -> list[str]:
    """A command that loads the TinyLM folder `folder`."""
    return {
        "convert --to gpt2": ["convert", str(folder), str(out), "--to", "gpt2", "--no-progress"],
        "train --model": ["train", "--model", str(folder), "--data", str(corpus), "--max-steps", "1", "-o", str(out),
                          "--no-progress"],
        "generate": ["generate", str(folder), "hello", "--max-new-tokens", "2"],
    }[name]


def damage_safetensors(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # the JSON header no longer parses
        path.write_bytes(data[:8] + b"#" * 16 + data[24:])


def edit_json(path: Path, edit) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def interrupt(monkeypatch, owner, name: str) -> None:
    """Make `owner.name` raise KeyboardInterrupt when called, as a Ctrl-C while it runs would."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, interrupted)


class Payload:
    """Unpickling this calls os.mkdir(marker): what a malicious pytorch_model.bin would do under plain pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def plant_payload(folder: Path, marker: Path) -> None:
    """Replace the folder's safetensors weights by a pytorch_model.bin holding the same tensors and a Payload."""
    state_dict = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state_dict, "extra": Payload(marker)}, folder / "pytorch_model.bin")


def fake_checkpoint(folder: Path, step: int, without: tuple[str, ...] = ()) -> Path:
    """A Trainer checkpoint folder with every file an exact resume reads (placeholders where only presence
    matters), minus `without`."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, path / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "tokenizer_config.json"):
        (path / name).write_bytes(b"placeholder")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    for name in without:
        (path / name).unlink()
    return path


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tinylm") / "model")


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


@pytest.fixture(scope="module")
def gpt2_source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpt2") / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=32, n_embd=16, n_layer=2, n_head=2)).save_pretrained(folder)
    return folder


@pytest.fixture
def gpt2_copy(gpt2_source, tmp_path) -> Path:
    return Path(shutil.copytree(gpt2_source, tmp_path / "gpt2"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(80)))
    return path


@pytest.fixture
def old_output(tmp_path) -> Path:
    """An existing output folder that a failed or interrupted `--overwrite` run must leave as it is."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("old")
    return folder


@pytest.fixture
def tf_release(shared_data, tmp_path) -> Path:
    """A writable copy of the TensorFlow-written tiny GPT-2 release, without its (optional) tokenizer files."""
    release = tmp_path / "openai"
    release.mkdir()
    for name in ("checkpoint", "hparams.json", "model.ckpt.index", TF_DATA_FILE):
        shutil.copy(shared_data / "gpt2-openai-tf-tiny" / "openai" / name, release / name)
    return release


# ----------------------------------------------------------------------------------------------- damaged weights


@pytest.mark.parametrize("how", ["truncated", "corrupt_header"])
@pytest.mark.parametrize("command", TINYLM_COMMANDS)
def test_damaged_safetensors_in_a_tinylm_folder_is_named_in_one_line_and_nothing_is_written(
    command, how, model_copy, corpus, tmp_path, capsys
):
    damage_safetensors(model_copy / "model.safetensors", how)
    assert main(tinylm_command(command, model_copy, tmp_path / "out", corpus)) == 1
    message = error_line(capsys)
    assert f"Cannot read {model_copy / 'model.safetensors'}" in message and "truncated or corrupt" in message
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("how", ["truncated", "corrupt_header"])
def test_damaged_safetensors_in_a_gpt2_source_is_named_in_one_line_and_nothing_is_written(
    how, gpt2_copy, tmp_path, capsys
):
    damage_safetensors(gpt2_copy / "model.safetensors", how)
    assert main(["convert", str(gpt2_copy), str(tmp_path / "out"), "--no-progress"]) == 1
    assert f"Cannot read {gpt2_copy / 'model.safetensors'}" in error_line(capsys)
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: {k: v for k, v in c.items() if k not in ("n_embd", "n_layer")},
         "config.json lacks the size field(s) n_embd, n_layer, which fix the tensor shapes."),
        (lambda c: {**{k: v for k, v in c.items() if k != "n_layer"}, "n_layers": c["n_layer"]},
         "config.json lacks the size field(s) n_layer (misspelled as 'n_layers'?)"),
    ],
    ids=["two_missing", "misspelled"],
)  # fmt: skip
def test_gpt2_source_missing_size_fields_names_them_in_one_line_not_every_tensor(
    edit, named, gpt2_copy, tmp_path, capsys
):
    edit_json(gpt2_copy / "config.json", edit)
    assert main(["convert", str(gpt2_copy), str(tmp_path / "out"), "--no-progress"]) == 1
    message = error_line(capsys)
    assert named in message and "h.0." not in message
    assert_nothing_written(tmp_path)


def test_gpt2_size_fields_may_be_given_by_their_transformers_aliases(gpt2_copy, tmp_path):
    aliases = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
               "n_positions": "max_position_embeddings"}  # fmt: skip
    edit_json(gpt2_copy / "config.json", lambda c: {aliases.get(k, k): v for k, v in c.items()})
    assert main(["convert", str(gpt2_copy), str(tmp_path / "out"), "--no-progress"]) == 0


def test_openai_hparams_missing_size_fields_are_named_in_one_line(tf_release, tmp_path, capsys):
    edit_json(tf_release / "hparams.json", lambda h: {k: v for k, v in h.items() if k not in ("n_embd", "n_head")})
    assert main(["convert", str(tf_release), str(tmp_path / "out"), "--no-progress"]) == 1
    message = error_line(capsys)
    assert "hparams.json lacks" in message and "n_embd, n_head" in message
    assert_nothing_written(tmp_path)


def test_unknown_config_fields_are_kept_and_change_nothing_as_in_transformers(tiny_model, model_copy, tmp_path):
    """Transformers' convention (PreTrainedConfig keeps unknown keys as attributes) is right for users: a field
    written by a newer version or added by hand neither stops loading nor gets lost on the next save."""
    edit_json(model_copy / "config.json", lambda c: {**c, "my_note": "trained on Tuesday"})
    model = TinyLMForCausalLM.from_pretrained(model_copy)
    assert model.config.my_note == "trained on Tuesday"
    check_tinylm_checkpoint(model_copy, model.config)
    model.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["my_note"] == "trained on Tuesday"
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(ids).logits, TinyLMForCausalLM.from_pretrained(tiny_model)(ids).logits)


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: {**c, "intermediate_size": 48},
         ["tensor 'model.layers.0.mlp.up_proj.weight' has shape [64, 32], but the config requires [48, 32]"]),
        (lambda c: {**c, "num_hidden_layers": 1},
         ["the weights hold 16 tensor(s) this config has no place for: model.layers.1.attn_norm.bias, "]),
        (lambda c: {**{k: v for k, v in c.items() if k != "num_hidden_layers"}, "num_hidden_layer": 2},
         ["the weights lack 32 tensor(s) of this config: model.layers.2.attn_norm.weight, ", "and 22 more;",
          "does not set num_hidden_layers (misspelled as 'num_hidden_layer'?)"]),
    ],
    ids=["misshaped", "extra_layer", "misspelled_layer_count"],
)  # fmt: skip
@pytest.mark.parametrize("command", TINYLM_COMMANDS)
def test_checkpoint_disagreeing_with_its_config_is_refused_naming_the_tensor_in_one_line(
    command, edit, named, model_copy, corpus, tmp_path, capsys
):
    edit_json(model_copy / "config.json", edit)
    assert main(tinylm_command(command, model_copy, tmp_path / "out", corpus)) == 1
    message = error_line(capsys)
    assert all(fragment in message for fragment in named) and "do not belong together" in message, message
    assert_nothing_written(tmp_path)


def test_matching_checkpoints_pass_the_check_in_every_layout(tiny_model, tmp_path):
    """Tied or untied head, and a `TinyLMModel` save whose names lack the `model.` prefix."""
    model = TinyLMForCausalLM.from_pretrained(tiny_model)
    check_tinylm_checkpoint(tiny_model, model.config)
    TinyLMModel(model.config).save_pretrained(tmp_path / "base")
    check_tinylm_checkpoint(tmp_path / "base", model.config)
    untied = make_tiny_model(tmp_path / "untied", tie_word_embeddings=False)
    assert "lm_head.weight" in load_file(untied / "model.safetensors")
    check_tinylm_checkpoint(untied, TinyLMForCausalLM.from_pretrained(untied).config)


# ----------------------------------------------------------------------------------------------- TF checksums


@pytest.mark.parametrize(
    "corrupted, named",
    [("data", "checksum mismatch for tensor 'model/h1/mlp/c_fc/w'"), ("index", "checksum mismatch in the table")],
)
def test_tf_checkpoint_with_a_bad_checksum_fails_in_one_line_and_keeps_the_old_output(
    corrupted, named, tf_release, old_output, capsys
):
    if corrupted == "data":
        entry = TFCheckpointReader(tf_release / "model.ckpt").entries()["model/h1/mlp/c_fc/w"]
        at, path = entry.offset + entry.size // 2, tf_release / TF_DATA_FILE
    else:
        path = tf_release / "model.ckpt.index"
        at = path.read_bytes().index(b"model/")
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    path.write_bytes(bytes(data))
    assert main(["convert", str(tf_release), str(old_output), "--overwrite", "--no-progress"]) == 1
    assert named in error_line(capsys)
    assert_old_output_intact(old_output)


# ----------------------------------------------------------------------------------------------- Ctrl-C


CONVERT_STEPS = {
    "reading": (gpt2_format.GPT2Format, "read"),
    "mapping": (gpt2_format, "gpt2_to_tinylm_tensors"),
    "saving_weights": (TinyLMForCausalLM, "save_pretrained"),
    "parity_check": (convert_module, "_check_parity"),
    "model_card": (convert_module, "render_model_card"),
}


@pytest.mark.parametrize("step", CONVERT_STEPS)
def test_ctrl_c_during_convert_exits_130_and_keeps_the_old_output(step, gpt2_source, old_output, monkeypatch, capsys):
    interrupt(monkeypatch, *CONVERT_STEPS[step])
    assert main(["convert", str(gpt2_source), str(old_output), "--overwrite", "--no-progress"]) == 130
    assert_interrupted(capsys)
    assert_old_output_intact(old_output)


def test_ctrl_c_while_the_new_folder_moves_in_puts_the_old_one_back(gpt2_source, old_output, monkeypatch, capsys):
    rename = Path.rename

    def interrupted_move(self, target):
        if self.name.startswith(".out.partial-"):
            raise KeyboardInterrupt
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted_move)
    assert main(["convert", str(gpt2_source), str(old_output), "--overwrite", "--no-progress"]) == 130
    assert_interrupted(capsys)
    assert_old_output_intact(old_output)


def test_sigint_during_the_final_move_is_held_until_the_new_folder_is_whole(
    gpt2_source, old_output, monkeypatch, capsys
):
    """A real SIGINT between the renames that swap the folders takes effect only once the swap is done."""
    rename = Path.rename

    def move_with_sigint(self, target):
        if self.parent == old_output.parent:
            os.kill(os.getpid(), signal.SIGINT)
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", move_with_sigint)
    assert main(["convert", str(gpt2_source), str(old_output), "--overwrite", "--no-progress"]) == 130
    assert_interrupted(capsys)
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in old_output.iterdir()}
    assert not (old_output / "keep.txt").exists()
    TinyLMForCausalLM.from_pretrained(old_output)
    assert leftovers(old_output.parent, "out") == []


@pytest.mark.parametrize("moment", ["conversion_starts", "weights_written"])
def test_sigint_to_a_real_convert_process_exits_130_with_one_line_and_keeps_the_old_output(
    moment, old_output, tmp_path
):
    source = tmp_path / "gpt2"
    config = GPT2Config(vocab_size=2000, n_positions=64, n_embd=64, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_tinylm", "convert", str(source), str(old_output), "--overwrite", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env(),
    )  # fmt: skip

    def reached() -> bool:  # the staging folder appears when the conversion starts; the weights go in first
        staging = list(tmp_path.glob(".out.partial-*"))
        return bool(staging) and (moment == "conversion_starts" or (staging[0] / "model.safetensors").exists())

    deadline = time.monotonic() + 300
    while not reached():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"the conversion never reached {moment}"
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert (process.returncode, stderr, stdout) == (130, "tinylm: interrupted\n", "")
    assert_old_output_intact(old_output)



HALF_BUILT_OBJECT = """
import os
import signal
import sys
from hf_tinylm.cli import main
from hf_tinylm.commands import info


class HalfBuilt:  # as a progress bar whose __init__ a SIGINT cuts short: its __del__ then fails
    def __init__(self):
        os.kill(os.getpid(), signal.SIGINT)
        self.ready = True

    def __del__(self):
        self.ready


def run(settings):
    try:
        HalfBuilt()
    except KeyboardInterrupt as interrupt:
        if sys.argv[1] == "library-error":  # a library turning Ctrl-C into an error of its own
            raise OSError("storage read failed") from interrupt
        raise


info.run = run
sys.exit(main(["info", "tiny"]))
"""


@pytest.mark.parametrize("how", ["keyboard-interrupt", "library-error"])
def test_ctrl_c_cutting_an_object_short_still_prints_one_line_not_its_destructors_traceback(how):
    result = subprocess.run(
        [sys.executable, "-c", HALF_BUILT_OBJECT, how], capture_output=True, text=True, env=offline_env()
    )
    assert (result.returncode, result.stderr, result.stdout) == (130, "tinylm: interrupted\n", "")

TRAIN_STEPS = {
    "training": (Trainer, "training_step"),
    "saving_weights": (TinyLMForCausalLM, "save_pretrained"),
    "model_card": (train_module, "render_model_card"),
}


@pytest.mark.parametrize("step", TRAIN_STEPS)
def test_ctrl_c_during_train_exits_130_and_keeps_the_old_output(step, corpus, old_output, monkeypatch, capsys):
    interrupt(monkeypatch, *TRAIN_STEPS[step])
    argv = ["train", "--data", str(corpus), *TINY_TRAIN_ARGS, "--max-steps", "2", "--save-steps", "0",
            "-o", str(old_output), "--overwrite"]  # fmt: skip
    assert main(argv) == 130
    assert_interrupted(capsys)
    assert_old_output_intact(old_output)


# ----------------------------------------------------------------------------------------------- resume


def test_resume_after_ctrl_c_while_checkpointing_continues_from_the_last_complete_checkpoint(
    corpus, tmp_path, monkeypatch, capsys, caplog
):
    argv = ["train", "--data", str(corpus), *TINY_TRAIN_ARGS, "--max-steps", "4", "--save-steps", "2",
            "-o", str(tmp_path / "out")]  # fmt: skip
    save_optimizer = Trainer._save_optimizer_and_scheduler

    def interrupted_at_step_4(self, output_dir):
        if output_dir.endswith("checkpoint-4"):
            raise KeyboardInterrupt
        return save_optimizer(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", interrupted_at_step_4)
    assert main(argv) == 130
    assert_interrupted(capsys)
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "out-checkpoints" / "checkpoint-4" / "model.safetensors").is_file()

    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert ("passing over incomplete checkpoint-4 (it lacks optimizer.pt, scheduler.pt, rng_state.pth, "
            "trainer_state.json); resuming from checkpoint-2") in caplog.text  # fmt: skip
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 4


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda c: (c / "optimizer.pt").unlink(), "checkpoint-6 (it lacks optimizer.pt)"),
        (lambda c: (c / "trainer_state.json").write_text('{"global_st'), "its trainer_state.json is cut off"),
        (lambda c: damage_safetensors(c / "model.safetensors", "truncated"), "checkpoint-6/model.safetensors"),
    ],
    ids=["missing_optimizer", "cut_off_state", "truncated_weights"],
)
def test_resume_latest_passes_over_an_incomplete_newest_checkpoint_saying_why(damage, reason, tmp_path, caplog):
    fake_checkpoint(tmp_path, 3)
    damage(fake_checkpoint(tmp_path, 6))
    assert _resume_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-3"
    assert reason in caplog.text and "resuming from checkpoint-3" in caplog.text


def test_resume_without_a_complete_checkpoint_says_what_each_one_lacks(tmp_path):
    fake_checkpoint(tmp_path, 3, without=("scheduler.pt",))
    fake_checkpoint(tmp_path, 6, without=("model.safetensors", "rng_state.pth"))
    with pytest.raises(FileNotFoundError) as info:
        _resume_checkpoint("latest", tmp_path)
    assert str(info.value) == (f"--resume: no complete checkpoint in {tmp_path}: checkpoint-6 (it lacks "
                               "model.safetensors, rng_state.pth); checkpoint-3 (it lacks scheduler.pt).")  # fmt: skip


def test_resume_from_a_named_incomplete_checkpoint_says_exactly_what_is_missing(corpus, tmp_path, capsys):
    checkpoint = fake_checkpoint(tmp_path / "elsewhere", 6, without=("optimizer.pt", "trainer_state.json"))
    argv = ["train", "--data", str(corpus), *TINY_TRAIN_ARGS, "-o", str(tmp_path / "out"), "--resume", str(checkpoint)]
    assert main(argv) == 1
    assert error_line(capsys) == (f"tinylm: error: --resume {checkpoint}: not a complete Trainer checkpoint: it lacks "
                                  "optimizer.pt, trainer_state.json.\n")  # fmt: skip
    assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------------------------- pickle, network


@pytest.mark.parametrize("command", TINYLM_COMMANDS)
def test_bin_weights_carrying_code_are_refused_in_one_line_without_running_it(
    command, model_copy, corpus, tmp_path, capsys
):
    plant_payload(model_copy, tmp_path / "payload-ran")
    assert main(tinylm_command(command, model_copy, tmp_path / "out", corpus)) == 1
    message = error_line(capsys)
    assert f"Refusing to load {model_copy / 'pytorch_model.bin'}" in message and "weights_only=True" in message
    assert not (tmp_path / "payload-ran").exists()
    assert_nothing_written(tmp_path)


def test_bin_gpt2_source_carrying_code_is_refused_without_running_it(gpt2_copy, tmp_path, capsys):
    plant_payload(gpt2_copy, tmp_path / "payload-ran")
    assert main(["convert", str(gpt2_copy), str(tmp_path / "out"), "--no-progress"]) == 1
    message = error_line(capsys)
    assert "weights_only=True" in message and "mkdir`)" in message  # the payload's function is named
    assert not (tmp_path / "payload-ran").exists()
    assert_nothing_written(tmp_path)


def test_transformers_loader_used_by_generate_never_runs_a_bin_payload(model_copy, tmp_path):
    plant_payload(model_copy, tmp_path / "payload-ran")
    with pytest.raises(Exception, match="Weights only load failed"):
        TinyLMForCausalLM.from_pretrained(model_copy)
    assert not (tmp_path / "payload-ran").exists()


def test_every_torch_load_in_the_package_is_weights_only_and_nothing_unpickles():
    loads, offenders = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner, where = getattr(node.func.value, "id", None), f"{path.relative_to(PACKAGE)}:{node.lineno}"
            if (owner, node.func.attr) == ("torch", "load"):
                loads += 1
                weights_only = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    offenders.append(f"{where}: torch.load without weights_only=True")
            elif owner in ("pickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
                offenders.append(f"{where}: {owner}.{node.func.attr}")
    assert loads >= 1 and offenders == []


IMPORT_EVERY_MODULE_WITHOUT_NETWORK = """
import importlib, os, pkgutil, socket, sys

def refuse(*args, **kwargs):
    sys.stderr.write(f"network access: {args!r}\\n")
    os._exit(3)  # not an exception a library could swallow

socket.socket.connect = socket.socket.connect_ex = socket.socket.sendto = refuse
socket.create_connection = socket.getaddrinfo = refuse
import hf_tinylm
for module in pkgutil.walk_packages(hf_tinylm.__path__, "hf_tinylm."):
    if module.name != "hf_tinylm.__main__":
        importlib.import_module(module.name)
hf_tinylm.cli.build_parser()
print("imported without network")
"""


def test_importing_the_package_and_every_submodule_touches_no_network():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                           "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")}
    run = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE_WITHOUT_NETWORK], capture_output=True, text=True,
                         env=env, timeout=300)  # fmt: skip
    assert (run.returncode, run.stdout) == (0, "imported without network\n"), run.stderr
