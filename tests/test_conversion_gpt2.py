"""Transformers GPT-2 -> TinyLM -> GPT-2: parity of logits and generations, every checkpoint layout, the saved folder.

Source checkpoints are tiny random `GPT2LMHeadModel`s whose weights are drawn wide (std 0.3, LayerNorm gains
around 1) so that any mapping mistake or ignored option moves the logits by far more than the 1e-5 tolerance.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conversion_testing import assert_no_output, assert_same_weights, max_logits_diff, randomise_wide
from conversion_testing import tokens as random_tokens
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from tinylm_testing import (
    assert_same_generation,
    generate_with_logits,
    run_without_hf_tinylm,
)
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2Model, pipeline

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.configuration_tinylm import MIN_TRANSFORMERS_VERSION
from hf_tinylm.conversion.base import ConversionError
from hf_tinylm.conversion.convert import convert
from hf_tinylm.model_folder import CheckpointError

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # fp32 logits, converted vs GPT2LMHeadModel
TINY = dict(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=95, eos_token_id=95)
VARIANTS = {
    "default": {},
    "eps_and_exact_gelu": dict(layer_norm_epsilon=1e-2, activation_function="gelu"),
    "relu_and_n_inner": dict(activation_function="relu", n_inner=48),
    "unscaled_and_inverse_layer_scaling": dict(scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True),
    "untied": dict(tie_word_embeddings=False),
    "wider_deeper": dict(n_embd=48, n_head=6, n_layer=3),
    "reorder_and_upcast_attn": dict(reorder_and_upcast_attn=True),
}


def random_gpt2(model_class=GPT2LMHeadModel, seed: int = 0, **overrides):
    """A GPT-2 with wide random weights (see the module docstring), in eval mode."""
    torch.manual_seed(seed)
    return randomise_wide(model_class(GPT2Config(**{**TINY, **overrides})), seed)


def save_gpt2(folder: Path, **overrides) -> GPT2LMHeadModel:
    model = random_gpt2(**overrides)
    model.save_pretrained(folder)
    return model


def tokens(vocab_size: int = TINY["vocab_size"], shape=(3, 20), seed: int = 1) -> torch.Tensor:
    return random_tokens(vocab_size, shape, seed)


# ----------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_matches_gpt2_logits_and_generations(variant, tmp_path):
    source = save_gpt2(tmp_path / "gpt2", **VARIANTS[variant])
    result = convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")

    input_ids = tokens()
    assert max_logits_diff(source, model, input_ids) <= ATOL
    assert result.max_abs_logits_diff <= ATOL
    prompt = input_ids[:2, :6]
    for settings in (dict(do_sample=False), dict(do_sample=True, top_k=0), dict(do_sample=False, num_beams=2)):
        settings.update(max_new_tokens=6, pad_token_id=95)
        expected = generate_with_logits(source, prompt, **settings)
        assert_same_generation(generate_with_logits(model, prompt, **settings), expected, atol=ATOL)


@pytest.mark.parametrize(
    "option",
    [dict(layer_norm_epsilon=1e-2), dict(activation_function="gelu"), dict(scale_attn_weights=False),
     dict(scale_attn_by_inverse_layer_idx=True)],
)  # fmt: skip
def test_each_math_option_moves_the_logits_far_beyond_the_tolerance(option):
    """The parity tests above could not pass if the converter ignored any of these options."""
    assert max_logits_diff(random_gpt2(), random_gpt2(**option), tokens()) > 100 * ATOL


def test_left_padded_batch_matches_gpt2_in_logits_and_batched_generation(tmp_path):
    """Given the same positions (as `generate` derives them from the mask); TinyLM derives them from the mask by
    itself, where GPT-2's forward defaults to 0..T-1 even for padding."""
    source = save_gpt2(tmp_path / "gpt2")
    convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")
    input_ids = tokens(shape=(2, 12))
    mask = torch.ones_like(input_ids)
    mask[0, :5] = 0  # left padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = source(input_ids, attention_mask=mask, position_ids=positions).logits[mask.bool()]
        got = model(input_ids, attention_mask=mask, position_ids=positions).logits[mask.bool()]
        assert (expected - got).abs().max().item() <= ATOL
        assert (model(input_ids, attention_mask=mask).logits[mask.bool()] - expected).abs().max().item() <= ATOL
    settings = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=95)
    assert torch.equal(source.generate(input_ids, **settings), model.generate(input_ids, **settings))


# ----------------------------------------------------------------------------------------------- source layouts


def test_pytorch_bin_with_legacy_mask_buffers_converts(tmp_path):
    source = random_gpt2()
    folder = tmp_path / "gpt2"
    source.config.save_pretrained(folder)
    state_dict = dict(source.state_dict())
    del state_dict["lm_head.weight"]
    state_dict["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    state_dict["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state_dict, folder / "pytorch_model.bin")

    convert(folder, tmp_path / "tinylm", progress=False)
    assert max_logits_diff(source, TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm"), tokens()) <= ATOL


def test_bin_holding_non_tensor_objects_is_refused_not_unpickled(tmp_path):
    source = random_gpt2()
    folder = tmp_path / "gpt2"
    source.config.save_pretrained(folder)
    torch.save({**source.state_dict(), "extra": Path("x")}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        convert(folder, tmp_path / "tinylm", progress=False)
    assert_no_output(tmp_path / "tinylm")


def test_sharded_source_converts_and_large_output_is_sharded(tmp_path):
    source = random_gpt2()
    source.save_pretrained(tmp_path / "gpt2", max_shard_size="20KB")
    assert (tmp_path / "gpt2" / "model.safetensors.index.json").is_file()

    convert(tmp_path / "gpt2", tmp_path / "tinylm", max_shard_size="20KB", progress=False)
    index = json.loads((tmp_path / "tinylm" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "tinylm" / "model.safetensors").exists()
    assert max_logits_diff(source, TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm"), tokens()) <= ATOL


def test_unprefixed_gpt2model_save_converts_with_the_head_tied_to_the_embedding(tmp_path):
    base = random_gpt2(GPT2Model)
    base.save_pretrained(tmp_path / "gpt2")
    assert "wte.weight" in load_file(tmp_path / "gpt2" / "model.safetensors")  # no `transformer.` prefix

    result = convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        hidden = base(tokens()).last_hidden_state
        expected = hidden @ base.wte.weight.t()
        assert (model(tokens()).logits - expected).abs().max().item() <= ATOL
    assert any("`GPT2Model` save" in note for note in result.notes)


# ----------------------------------------------------------------------------------------------- output folder


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_output_dtype_is_honoured_and_its_rounding_reported(dtype, tmp_path):
    source = save_gpt2(tmp_path / "gpt2")
    result = convert(tmp_path / "gpt2", tmp_path / "tinylm", dtype=dtype, progress=False)

    weights = load_file(tmp_path / "tinylm" / "model.safetensors")
    assert {str(t.dtype) for t in weights.values()} == {f"torch.{dtype}"}
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")
    assert model.dtype == getattr(torch, dtype)
    # The figure is the real rounding error: present, and bounded by the precision (logits here are ~O(10)).
    assert 0 < result.max_abs_logits_diff < 1.0
    assert max_logits_diff(source, model.float(), tokens()) < 1.0
    assert f"Max |Δlogits| = {result.max_abs_logits_diff:.3g}" in (tmp_path / "tinylm" / "README.md").read_text()


def test_output_folder_is_hub_ready_with_card_metadata_and_measured_parity(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    result = convert(tmp_path / "gpt2", tmp_path / "tinylm", base_model="openai-community/gpt2", license="mit",
                     progress=False)  # fmt: skip
    out = tmp_path / "tinylm"

    assert {"config.json", "generation_config.json", "model.safetensors", "README.md", "configuration_tinylm.py",
            "modeling_tinylm.py"} <= {p.name for p in out.iterdir()}  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "tinylm"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_tinylm.TinyLMForCausalLM"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 95
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model == "openai-community/gpt2" and card.data.license == "mit"
    assert "tinylm" in card.data.tags
    assert f"Max |Δlogits| = {result.max_abs_logits_diff:.3g}" in card.text
    assert f"{result.num_parameters:,}" in card.text
    assert f"`transformers>={MIN_TRANSFORMERS_VERSION}`" in card.text  # what the saved code needs to run
    assert result.num_parameters == sum(p.numel() for p in random_gpt2().parameters())


def test_conversion_whose_logits_disagree_with_the_source_is_refused_and_not_saved(tmp_path, monkeypatch):
    import hf_tinylm.conversion.formats.gpt2 as gpt2_format

    mapping = gpt2_format.gpt2_to_tinylm_tensors

    def off_by_a_little(state_dict, config):
        for name, tensor in mapping(state_dict, config):
            yield name, tensor + 1e-2 if name == "model.norm.bias" else tensor

    save_gpt2(tmp_path / "gpt2")
    monkeypatch.setattr(gpt2_format, "gpt2_to_tinylm_tensors", off_by_a_little)
    with pytest.raises(ConversionError, match="Parity check failed"):
        convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    assert_no_output(tmp_path / "tinylm")


def test_reorder_and_upcast_attn_is_accepted_with_its_reason_in_the_card(tmp_path):
    save_gpt2(tmp_path / "gpt2", reorder_and_upcast_attn=True)
    result = convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    assert any("reorder_and_upcast_attn=True" in note for note in result.notes)
    assert "only changes how the *eager* attention kernel" in (tmp_path / "tinylm" / "README.md").read_text()


def test_existing_output_is_refused_and_left_untouched_unless_overwrite(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    out = tmp_path / "tinylm"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert(tmp_path / "gpt2", out, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    convert(tmp_path / "gpt2", out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_output_that_would_replace_the_source_is_refused_even_with_overwrite(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    with pytest.raises(ConversionError, match="would replace the source"):
        convert(tmp_path / "gpt2", tmp_path / "gpt2", overwrite=True, progress=False)
    assert (tmp_path / "gpt2" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------- the way back


@pytest.mark.parametrize("overrides", [{}, dict(tie_word_embeddings=False, activation_function="relu")])
def test_gpt2_to_tinylm_to_gpt2_is_bit_exact(overrides, tmp_path):
    source = save_gpt2(tmp_path / "gpt2", **overrides)
    convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    result = convert(tmp_path / "tinylm", tmp_path / "back", to="gpt2", progress=False)

    assert_same_weights(tmp_path / "gpt2", tmp_path / "back")
    exported = GPT2LMHeadModel.from_pretrained(tmp_path / "back")
    assert exported.config.to_diff_dict() == source.config.to_diff_dict()
    input_ids = tokens()
    with torch.no_grad():
        assert torch.equal(exported(input_ids).logits, source(input_ids).logits)
    assert result.max_abs_logits_diff <= ATOL
    card = ModelCard.load(tmp_path / "back" / "README.md")
    assert card.data.library_name == "transformers" and "gpt2" in card.data.tags
    assert f"Max |Δlogits| = {result.max_abs_logits_diff:.3g}" in card.text


def test_half_precision_round_trip_is_bit_exact_by_default(tmp_path):
    random_gpt2().half().save_pretrained(tmp_path / "gpt2")
    convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    convert(tmp_path / "tinylm", tmp_path / "back", to="gpt2", progress=False)
    assert_same_weights(tmp_path / "gpt2", tmp_path / "back", torch.float16)


def test_tinylm_that_gpt2_cannot_represent_is_refused_naming_the_differences(tmp_path):
    TinyLMForCausalLM(TinyLMConfig.from_preset("llama-tiny")).save_pretrained(tmp_path / "llama")
    with pytest.raises(ConversionError, match="position_embedding_type='rotary'.*norm_type='rmsnorm'"):
        convert(tmp_path / "llama", tmp_path / "gpt2", to="gpt2", progress=False)
    assert_no_output(tmp_path / "gpt2")


def test_wrong_direction_is_refused_with_the_right_option_named(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    with pytest.raises(ConversionError, match="leave --to at its default"):
        convert(tmp_path / "gpt2", tmp_path / "out", to="gpt2", progress=False)
    convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    with pytest.raises(ConversionError, match="use --to gpt2"):
        convert(tmp_path / "tinylm", tmp_path / "out", progress=False)
    assert_no_output(tmp_path / "out")


# ------------------------------------------------------------------------------------- real tokenizer, remote code


@pytest.fixture(scope="module")
def converted_with_real_tokenizer(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """A vocab-50257 random GPT-2 saved with the real GPT-2 tokenizer files, and its TinyLM conversion."""
    root = tmp_path_factory.mktemp("real_tokenizer")
    save_gpt2(root / "gpt2", vocab_size=50257, bos_token_id=50256, eos_token_id=50256)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(shared_data / "gpt2-tokenizer" / name, root / "gpt2" / name)
    convert(root / "gpt2", root / "tinylm", progress=False)
    return root / "gpt2", root / "tinylm"


def test_converted_folder_generates_like_gpt2_in_a_text_generation_pipeline(converted_with_real_tokenizer):
    gpt2_folder, tinylm_folder = converted_with_real_tokenizer
    assert AutoTokenizer.from_pretrained(tinylm_folder)("Hello world").input_ids == [15496, 995]
    settings = dict(max_new_tokens=10, do_sample=False)
    prompt = "Hello, my dog is cute and"
    expected = pipeline("text-generation", model=str(gpt2_folder))(prompt, **settings)[0]["generated_text"]
    got = pipeline("text-generation", model=str(tinylm_folder))(prompt, **settings)[0]["generated_text"]
    assert got == expected and len(got) > len(prompt)


def test_checkpoint_saved_by_transformers_4_converts_and_generates_its_published_tokens(shared_data, tmp_path):
    """`sshleifer/tiny-gpt2` as re-saved by transformers 4.52.1 (see its SOURCES.md for the expected tokens)."""
    source = shared_data / "gpt2-tiny-random-hf"
    convert(source, tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tinylm")
    input_ids = tokenizer("Hello, my dog is cute and", return_tensors="pt").input_ids
    assert input_ids.tolist() == [[15496, 11, 616, 3290, 318, 13779, 290]]
    generated = model.generate(input_ids, max_new_tokens=10, do_sample=False)
    assert generated[0, 7:].tolist() == [16046] * 10
    assert max_logits_diff(GPT2LMHeadModel.from_pretrained(source), model, input_ids) <= ATOL


def real_block0_gpt2(folder: Path) -> GPT2LMHeadModel:
    """A 1-layer GPT-2 at 124M width holding OpenAI's real block-0 attention and LayerNorm weights, real position
    table and final LayerNorm (the MLP kernels and token embeddings were not obtainable: random, vocab 512)."""
    def real(name: str, shape) -> torch.Tensor:
        return torch.from_numpy(np.fromfile(folder / f"{name}.dat", ">f4").astype("<f4").reshape(shape))

    model = random_gpt2(vocab_size=512, n_positions=1024, n_embd=768, n_head=12, n_layer=1, bos_token_id=0,
                        eos_token_id=0)  # fmt: skip
    block = model.transformer.h[0]
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0, 0.1)
        model.transformer.wpe.weight.copy_(real("input/wpe", (1024, 768)))
        qkv = [real(f"decoder1/att.{part}", (768, 768)) for part in ("query.w", "key.w", "value.w")]
        block.attn.c_attn.weight.copy_(torch.cat(qkv, dim=1))
        qkv_bias = [real(f"decoder1/att.{part}.b", (768,)) for part in ("query", "key", "value")]
        block.attn.c_attn.bias.copy_(torch.cat(qkv_bias))
        block.attn.c_proj.weight.copy_(real("decoder1/att.proj.w", (768, 768)))
        block.attn.c_proj.bias.copy_(real("decoder1/att.proj.b", (768,)))
        block.mlp.c_fc.weight.normal_(0, 0.02)
        block.mlp.c_proj.weight.normal_(0, 0.02)
        block.mlp.c_fc.bias.copy_(real("decoder1/mlp.layer1.b", (3072,)))
        block.mlp.c_proj.bias.copy_(real("decoder1/mlp.layer2.b", (768,)))
        for ln, stem in ((block.ln_1, "decoder1/att.norm"), (block.ln_2, "decoder1/mlp.norm"),
                         (model.transformer.ln_f, "output/norm")):
            ln.weight.copy_(real(f"{stem}.w", (768,)))
            ln.bias.copy_(real(f"{stem}.b", (768,)))
    return model


def test_real_gpt2_block0_weights_convert_with_logits_parity(shared_data, tmp_path):
    source = real_block0_gpt2(shared_data / "gpt2-124M-real-weights-h0")
    source.save_pretrained(tmp_path / "gpt2")
    result = convert(tmp_path / "gpt2", tmp_path / "tinylm", progress=False)
    model = TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm")
    input_ids = tokens(512, (2, 256))
    assert max_logits_diff(source, model, input_ids) <= ATOL
    assert result.max_abs_logits_diff <= ATOL


REMOTE_CODE_CHECK = """
import torch
from transformers import AutoModelForCausalLM
folder, input_ids, expected = sys.argv[1], torch.load(sys.argv[2]), torch.load(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert model.lm_head.weight is model.model.embed_tokens.weight
with torch.no_grad():
    diff = (model(input_ids).logits - expected).abs().max().item()
assert diff <= 1e-5, diff
print("remote code ok", diff)
"""


def test_converted_folder_loads_with_trust_remote_code_where_hf_tinylm_is_absent(converted_with_real_tokenizer,
                                                                                  tmp_path):
    gpt2_folder, tinylm_folder = converted_with_real_tokenizer
    input_ids = tokens(50257, (2, 8))
    with torch.no_grad():
        expected = GPT2LMHeadModel.from_pretrained(gpt2_folder)(input_ids).logits
    torch.save(input_ids, tmp_path / "ids.pt")
    torch.save(expected, tmp_path / "expected.pt")
    run = run_without_hf_tinylm(REMOTE_CODE_CHECK, tinylm_folder, tmp_path / "ids.pt", tmp_path / "expected.pt",
                                cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "remote code ok" in run.stdout


# ----------------------------------------------------------------------------------------------- Hub cache, CLI


def test_hub_repo_id_converts_from_the_local_hub_cache_offline_via_the_tinylm_command(tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-gpt2"
    snapshot = repo / "snapshots" / revision
    source = save_gpt2(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    run = subprocess.run(
        [sys.executable, "-m", "hf_tinylm", "convert", "tiny-org/tiny-gpt2", str(tmp_path / "tinylm"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "max |Δlogits| = 0" in run.stdout
    assert max_logits_diff(source, TinyLMForCausalLM.from_pretrained(tmp_path / "tinylm"), tokens()) <= ATOL
    assert ModelCard.load(tmp_path / "tinylm" / "README.md").data.base_model == "tiny-org/tiny-gpt2"


def test_repo_id_missing_from_the_offline_cache_fails_clearly(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from hf_tinylm.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv = ["convert", "tiny-org/absent", str(tmp_path / "tinylm"), "--cache-dir", str(tmp_path / "empty-hub")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: 'tiny-org/absent' is not a local folder and not (completely) in")
    assert "hf download tiny-org/absent" in err
    assert_no_output(tmp_path / "tinylm")


# ----------------------------------------------------------------------------------------------- bad sources


def break_checkpoint(folder: Path, how: str) -> str:
    """Damage a saved tiny GPT-2 in `folder`; returns the text the error must contain."""
    weights = folder / "model.safetensors"
    if how == "not_a_checkpoint":
        shutil.rmtree(folder)
        folder.mkdir()
        (folder / "notes.txt").write_text("hello")
        return "is not a checkpoint this converter reads"
    if how == "other_model_type":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
        return "model_type='bert'"
    if how in ("missing_tensor", "misshaped_tensor"):
        tensors = load_file(weights)
        if how == "missing_tensor":
            del tensors["transformer.h.1.mlp.c_proj.bias"]
        else:
            tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"][:10]
        save_file(tensors, weights, metadata={"format": "pt"})
        return "h.1.mlp.c_proj.bias" if how == "missing_tensor" else "'wpe.weight' has shape [10, 32]"
    if how == "unsupported_option":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "add_cross_attention": True}))
        return "add_cross_attention"
    if how == "truncated_file":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return "truncated or corrupt"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["not_a_checkpoint", "other_model_type", "missing_tensor", "misshaped_tensor", "unsupported_option",
            "truncated_file"],
)  # fmt: skip
def test_bad_source_fails_with_a_clear_error_exit_1_and_no_output(how, tmp_path, capsys):
    from hf_tinylm.cli import main

    save_gpt2(tmp_path / "gpt2")
    expected = break_checkpoint(tmp_path / "gpt2", how)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "gpt2"), str(tmp_path / "tinylm"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: ") and expected in err, err
    assert_no_output(tmp_path / "tinylm")


def test_bad_source_exits_1_through_the_script(tmp_path):
    save_gpt2(tmp_path / "gpt2")
    expected = break_checkpoint(tmp_path / "gpt2", "missing_tensor")
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts/convert/convert_gpt2_to_tinylm.py"), str(tmp_path / "gpt2"),
         str(tmp_path / "tinylm")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1
    assert "tinylm: error: " in run.stderr and expected in run.stderr
    assert "Traceback" not in run.stderr
    assert_no_output(tmp_path / "tinylm")
