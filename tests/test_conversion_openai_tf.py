"""OpenAI's TensorFlow GPT-2 release -> TinyLM, without TensorFlow, on real files.

`gpt2-openai-tf-tiny` was written by TensorFlow itself and comes with its exact Transformers twin and reference
logits; `gpt2-124M-tf-checkpoint-meta` is OpenAI's real 124M index with the first 3 MiB of its data file.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2Config

from hf_tinylm import TinyLMForCausalLM
from hf_tinylm.cli import main
from hf_tinylm.conversion.base import ConversionError
from hf_tinylm.conversion.convert import convert
from hf_tinylm.conversion.formats.gpt2 import tinylm_to_gpt2_tensors
from hf_tinylm.conversion.formats.openai_tf import plan_openai_tf
from hf_tinylm.conversion.tf_checkpoint import TFCheckpointReader

DATA_FILE = "model.ckpt.data-00000-of-00001"
RELEASE_FILES = ("checkpoint", "hparams.json", "model.ckpt.index", DATA_FILE, "encoder.json", "vocab.bpe")


@pytest.fixture(scope="module")
def tiny(shared_data) -> Path:
    return shared_data / "gpt2-openai-tf-tiny"


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory) -> tuple[Path, object]:
    output = tmp_path_factory.mktemp("openai") / "tinylm"
    return output, convert(tiny / "openai", output, progress=False)


def test_real_124m_index_is_read_completely_and_maps_onto_gpt2_small(shared_data):
    folder = shared_data / "gpt2-124M-tf-checkpoint-meta"
    hparams = json.loads((folder / "hparams.json").read_text())
    config = GPT2Config(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_embd=hparams["n_embd"],
                        n_head=hparams["n_head"], n_layer=hparams["n_layer"])  # fmt: skip
    entries = TFCheckpointReader(folder / "model.ckpt").entries()

    names, ignored = plan_openai_tf(entries, config)  # raises on any missing, misshaped or foreign tensor

    assert len(entries) == len(names) == 148 and ignored == []
    assert names["model/h11/mlp/c_proj/w"] == "h.11.mlp.c_proj.weight"
    assert sum(entry.num_elements for entry in entries.values()) == 124_439_808


def test_truncated_real_124m_data_file_fails_naming_the_first_incomplete_tensor(shared_data, tmp_path, capsys):
    """The real 124M index with the first 3 MiB of its data: the first tensor reads (and checks), the next does not."""
    real = shared_data / "gpt2-124M-tf-checkpoint-meta"
    release = tmp_path / "124M"
    release.mkdir()
    for name in ("checkpoint", "hparams.json", "model.ckpt.index"):
        shutil.copy(real / name, release / name)
    (release / DATA_FILE).symlink_to(real / f"{DATA_FILE}.first3MiB")

    assert main(["convert", str(release), str(tmp_path / "tinylm"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: tensor 'model/h0/attn/c_attn/w'") and "truncated" in err
    assert not (tmp_path / "tinylm").exists()


def test_tf_written_checkpoint_converts_to_the_exact_tensors_of_its_transformers_twin(tiny, converted):
    output, result = converted
    assert result.source_format == "openai-tf" and result.max_abs_logits_diff == 0.0
    model = TinyLMForCausalLM.from_pretrained(output)
    back = {k: v for k, v in tinylm_to_gpt2_tensors(model.state_dict(), model.config)}
    twin = load_file(tiny / "hf" / "model.safetensors")
    assert back.keys() == twin.keys()
    for name, tensor in twin.items():
        assert torch.equal(back[name], tensor), name  # same float32 bits
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_tf_written_checkpoint_reproduces_the_reference_logits(tiny, converted):
    output, _ = converted
    reference = np.load(tiny / "reference_logits.npz")
    model = TinyLMForCausalLM.from_pretrained(output)
    vocab_idx = torch.from_numpy(reference["vocab_idx"])
    with torch.no_grad():
        logits = model(torch.from_numpy(reference["input_ids"])).logits
        long_logits = model(torch.from_numpy(reference["input_ids_long"])).logits  # all n_ctx=128 positions
    checks = [
        (logits[:, :, vocab_idx], reference["logits"]),
        (logits[:, -1], reference["logits_last_full"]),
        (long_logits[:, :, vocab_idx], reference["logits_long"]),
    ]
    for got, expected in checks:
        assert np.abs(got.numpy() - expected).max() <= 1e-5


def test_encoder_json_and_vocab_bpe_become_the_real_gpt2_tokenizer(shared_data, converted):
    output, _ = converted
    tokenizer = AutoTokenizer.from_pretrained(output)
    vectors = shared_data / "gpt2-tokenizer"
    with open(vectors / "ggml-vocab-gpt-2.gguf.inp", newline="") as file:
        cases = file.read().split("\n__ggml_vocab_test__\n")[:-1]
    expected = (vectors / "ggml-vocab-gpt-2.gguf.out").read_text().splitlines()
    assert len(cases) == len(expected) == 46
    for text, ids in zip(cases, expected):
        assert tokenizer(text, add_special_tokens=False).input_ids == [int(i) for i in ids.split()], text
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 50256
    config = json.loads((output / "config.json").read_text())
    assert config["bos_token_id"] == config["eos_token_id"] == 50256


def test_flipped_byte_in_the_data_file_fails_the_checksum_naming_the_tensor(tiny, tmp_path, capsys):
    release = tmp_path / "openai"
    release.mkdir()
    for name in RELEASE_FILES:
        shutil.copy(tiny / "openai" / name, release / name)
    entry = TFCheckpointReader(release / "model.ckpt").entries()["model/h1/mlp/c_fc/w"]
    with open(release / DATA_FILE, "r+b") as file:
        file.seek(entry.offset + entry.size // 2)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0x01]))

    assert main(["convert", str(release), str(tmp_path / "tinylm"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "tinylm: error: checksum mismatch for tensor 'model/h1/mlp/c_fc/w'" in err
    assert not (tmp_path / "tinylm").exists()


def test_hparams_disagreeing_with_the_tensors_is_refused_before_reading_data(tiny, tmp_path):
    release = tmp_path / "openai"
    release.mkdir()
    for name in ("checkpoint", "model.ckpt.index"):
        shutil.copy(tiny / "openai" / name, release / name)  # no data file: it must not be needed
    hparams = json.loads((tiny / "openai" / "hparams.json").read_text())
    (release / "hparams.json").write_text(json.dumps({**hparams, "n_ctx": 256}))
    with pytest.raises(ConversionError, match=r"'wpe.weight' has shape \[128, 64\].*\[256, 64\]"):
        convert(release, tmp_path / "tinylm", progress=False)
