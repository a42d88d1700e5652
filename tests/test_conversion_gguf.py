"""TinyLM (and any source through it) -> GGUF, checked by an independent reader: Transformers' own GGUF loader.

Sources are small random TinyLMs of both GGUF architectures (`llama` for rotary, `gpt2` for learned positions) with a
byte-level BPE tokenizer trained here; the GGUF file is loaded with `from_pretrained(folder, gguf_file=...)` and its
logits, greedy generations and tokenizer are compared with the source's.
"""

import json
from pathlib import Path

import gguf
import pytest
import torch
from conversion_testing import assert_no_output, max_logits_diff, randomise_wide, tokens
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.cli import main
from hf_tinylm.conversion.base import ConversionError
from hf_tinylm.conversion.convert import convert
from hf_tinylm.training.tokenizer import train_bpe_tokenizer

ATOL = 1e-5  # fp32 logits, Transformers' GGUF reader vs the source TinyLM
VOCAB = 300
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
VARIANTS = {  # (preset, overrides)
    "llama_gqa_untied": ("llama-tiny", dict(num_key_value_heads=2, rope_parameters={"rope_type": "default",
                                                                                     "rope_theta": 500.0})),
    "llama_mha_tied_eps": ("llama-tiny", dict(num_key_value_heads=4, tie_word_embeddings=True, norm_eps=1e-3)),
    "llama_mqa_head_dim": ("llama-tiny", dict(num_key_value_heads=1, head_dim=32, intermediate_size=96)),
    "gpt2_tied": ("tiny", {}),
    "gpt2_untied_narrow_mlp_eps": ("tiny", dict(tie_word_embeddings=False, intermediate_size=96, norm_eps=1e-3)),
}  # fmt: skip
TEXT = "def convert(source, output):\n    return 'hello world'  # GGUF ünïcode ✓\n"


@pytest.fixture(scope="module")
def tokenizer():
    corpus = Path(__file__).read_text(encoding="utf-8").splitlines()
    return train_bpe_tokenizer([corpus], VOCAB, show_progress=False)


def save_tinylm(folder: Path, tokenizer, preset: str, seed: int = 0, **overrides) -> TinyLMForCausalLM:
    config = TinyLMConfig.from_preset(preset, **SHAPE, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, **overrides)  # fmt: skip
    torch.manual_seed(seed)
    model = randomise_wide(TinyLMForCausalLM(config), seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def load_gguf(path: Path):
    """The GGUF file as Transformers reads it (with the two `gpt2` metadata names its map misses, see gguf.py)."""
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    if config.model_type == "gpt2":
        config.n_positions, config.n_inner = config.n_ctx, config.feed_forward_length
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_gguf_read_by_transformers_matches_the_source_logits_and_greedy_generation(variant, tokenizer, tmp_path):
    preset, overrides = VARIANTS[variant]
    source = save_tinylm(tmp_path / "tinylm", tokenizer, preset, **overrides)
    result = convert(tmp_path / "tinylm", tmp_path / "model.gguf", to="gguf", progress=False)

    model = load_gguf(tmp_path / "model.gguf")
    assert model.config.model_type == ("gpt2" if preset == "tiny" else "llama")
    input_ids = tokens(VOCAB)
    assert max_logits_diff(source, model, input_ids) <= ATOL and result.max_abs_logits_diff <= ATOL
    settings = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    prompt = input_ids[:2, :6]
    assert torch.equal(model.generate(prompt, **settings), source.generate(prompt, **settings))


@pytest.mark.parametrize("preset", ["llama-tiny", "tiny"])
def test_gguf_tokenizer_encodes_like_the_source_with_its_special_tokens(preset, tokenizer, tmp_path):
    save_tinylm(tmp_path / "tinylm", tokenizer, preset)
    convert(tmp_path / "tinylm", tmp_path / "model.gguf", to="gguf", progress=False)
    read = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    assert read(TEXT).input_ids == tokenizer(TEXT).input_ids
    assert read.decode(read(TEXT).input_ids) == TEXT
    assert (read.eos_token, read.bos_token) == (tokenizer.eos_token, tokenizer.bos_token)
    assert read(TEXT + tokenizer.eos_token).input_ids[-1] == tokenizer.eos_token_id  # kept whole: a special token


@pytest.mark.parametrize("preset, architecture",
                         [("llama-tiny", gguf.MODEL_ARCH.LLAMA), ("tiny", gguf.MODEL_ARCH.GPT2)])  # fmt: skip
@pytest.mark.parametrize("dtype, weight_type, file_type", [("float32", "F32", 0), ("float16", "F16", 1),
                                                           ("bfloat16", "BF16", 32)])  # fmt: skip
def test_tensor_names_types_and_metadata_are_llama_cpps(preset, architecture, dtype, weight_type, file_type, tokenizer,
                                                        tmp_path):  # fmt: skip
    source = save_tinylm(tmp_path / "tinylm", tokenizer, preset)
    result = convert(tmp_path / "tinylm", tmp_path / "model.gguf", to="gguf", dtype=dtype, progress=False)

    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    known = {gguf.TENSOR_NAMES[tensor] for tensor in gguf.MODEL_TENSORS[architecture]}
    layers = source.config.num_hidden_layers
    for tensor in reader.tensors:
        assert tensor.name.rsplit(".", 1)[0] in {name.format(bid=i) for name in known for i in range(layers)}
        assert tensor.tensor_type.name == (weight_type if len(tensor.shape) > 1 else "F32"), tensor.name
    # TinyLM's q, k and v projections: three tensors in llama's layout, one `attn_qkv` (and its bias) in gpt2's
    fused_qkv = 2 * 2 * layers if architecture == gguf.MODEL_ARCH.GPT2 else 0
    assert len(reader.tensors) == len(source.state_dict()) - source.config.tie_word_embeddings - fused_qkv
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == gguf.MODEL_ARCH_NAMES[architecture]
    assert fields["general.file_type"].parts[-1][0] == file_type
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    if dtype != "float32":  # the reported parity is the rounding of the weights, measured
        assert 0 < result.max_abs_logits_diff < 0.05 * source(tokens(VOCAB)).logits.abs().max().item()


def test_transformers_gpt2_and_llama_folders_convert_straight_to_gguf(tokenizer, tmp_path):
    torch.manual_seed(0)
    gpt2 = randomise_wide(GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4)))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    llama = randomise_wide(LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        num_key_value_heads=2)))  # fmt: skip
    llama.save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    for name, source in (("gpt2", gpt2), ("llama", llama)):
        result = convert(tmp_path / name, tmp_path / f"{name}.gguf", to="gguf", progress=False)
        assert result.source_format == name and result.target == "gguf"
        assert max_logits_diff(source, load_gguf(tmp_path / f"{name}.gguf"), tokens(VOCAB)) <= ATOL


def test_existing_output_file_is_refused_unless_overwrite_and_then_replaced_whole(tokenizer, tmp_path):
    save_tinylm(tmp_path / "tinylm", tokenizer, "llama-tiny")
    output = tmp_path / "model.gguf"
    output.write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert(tmp_path / "tinylm", output, to="gguf", progress=False)
    assert output.read_text() == "mine"
    convert(tmp_path / "tinylm", output, to="gguf", overwrite=True, progress=False)
    assert output.read_bytes()[:4] == b"GGUF" and sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "tinylm"]


def test_a_wrong_q_k_layout_fails_parity_and_writes_nothing(tokenizer, tmp_path, monkeypatch):
    from hf_tinylm.conversion.formats import gguf as gguf_format

    save_tinylm(tmp_path / "tinylm", tokenizer, "llama-tiny")
    monkeypatch.setattr(gguf_format, "_interleave_rope_rows", lambda weight, num_heads: weight)
    with pytest.raises(ConversionError, match="Parity check failed"):
        convert(tmp_path / "tinylm", tmp_path / "model.gguf", to="gguf", progress=False)
    assert_no_output(tmp_path / "model.gguf")


REFUSED = {  # overrides of the `tiny` preset -> what the error must name
    "alibi": (dict(position_embedding_type="alibi"), "position_embedding_type='alibi' (Llama needs 'rotary')"),
    "sinusoidal": (dict(position_embedding_type="sinusoidal"),
                   "position_embedding_type='sinusoidal' (GPT-2 needs 'learned')"),
    "post_norm": (dict(norm_position="post"), "norm_position='post' (GPT-2 needs 'pre')"),
    "mixed_rmsnorm_learned": (dict(norm_type="rmsnorm"), "norm_type='rmsnorm' (GPT-2 needs 'layernorm')"),
    "exact_gelu": (dict(hidden_act="gelu"), "hidden_act='gelu' (GGUF gpt2 needs 'gelu_new')"),
    "rope_scaling": (dict(position_embedding_type="rotary", norm_type="rmsnorm", mlp_type="glu", hidden_act="silu",
                          attention_bias=False, mlp_bias=False,
                          rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
                     "rope_type='linear' (GGUF llama as Transformers reads it carries rope_theta only)"),
    "llama_biases": (dict(position_embedding_type="rotary", norm_type="rmsnorm", mlp_type="glu", hidden_act="silu"),
                     "attention_bias=True (GGUF llama needs False)"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_config_gguf_cannot_express_is_refused_in_one_line_naming_the_reason(case, tokenizer, tmp_path, capsys):
    overrides, expected = REFUSED[case]
    TinyLMForCausalLM(TinyLMConfig.from_preset("tiny", **overrides)).save_pretrained(tmp_path / "tinylm")
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "tinylm"), str(tmp_path / "model.gguf"), "--to", "gguf",
                 "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("tinylm: error: This TinyLM config cannot be expressed as GGUF") and expected in err, err
    assert err.count("\n") == 1
    assert_no_output(tmp_path / "model.gguf")


def test_source_without_tokenizer_is_refused_and_nothing_is_written(tmp_path):
    TinyLMForCausalLM(TinyLMConfig.from_preset("llama-tiny")).save_pretrained(tmp_path / "tinylm")
    with pytest.raises(ConversionError, match="has no tokenizer, and a GGUF file carries its own"):
        convert(tmp_path / "tinylm", tmp_path / "model.gguf", to="gguf", progress=False)
    assert_no_output(tmp_path / "model.gguf")
    assert json.loads((tmp_path / "tinylm" / "config.json").read_text())["model_type"] == "tinylm"
