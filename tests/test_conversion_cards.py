"""The shipped model cards of the four GPT-2 sizes: valid Hub metadata, parameter counts that match the models, and
every measured figure rendered from `model_cards/gpt2_measurements.json` by `scripts/model_cards/render_gpt2_cards.py`."""

import importlib.util
import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import GPT2Config, GPT2LMHeadModel

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
from hf_tinylm.conversion.convert import FP32_PARITY_LIMIT

SIZES = {  # OpenAI's shapes: n_embd, n_layer, n_head
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}


@pytest.mark.parametrize("name", SIZES)
def test_size_card_has_hub_metadata_and_the_parameter_count_of_both_models(name):
    card = ModelCard(resources.files("hf_tinylm.model_cards").joinpath(f"{name}.md").read_text(encoding="utf-8"))
    n_embd, n_layer, n_head = SIZES[name]
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head)).num_parameters()
        tinylm = TinyLMForCausalLM(TinyLMConfig.from_preset(name)).num_parameters()

    assert gpt2 == tinylm
    assert f"{gpt2:,}" in card.text
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model == f"openai-community/{name}" and card.data.license == "mit"
    assert f"tinylm convert openai-community/{name}" in card.text
    assert "max |Δlogits|" in card.text


# ------------------------------------------------------------------------------------ generated from measurements

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "model_cards" / "render_gpt2_cards.py"


@pytest.fixture(scope="module")
def script():
    """scripts/model_cards/render_gpt2_cards.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("render_gpt2_cards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measurements(script) -> dict:
    return json.loads(script.MEASUREMENTS.read_text(encoding="utf-8"))


def test_committed_cards_are_exactly_what_the_committed_measurements_render(script, measurements):
    rendered = script.render_cards(measurements)
    assert rendered.keys() == SIZES.keys()
    for name, text in rendered.items():
        assert (script.CARDS / f"{name}.md").read_text(encoding="utf-8") == text, (
            f"model_cards/{name}.md was edited by hand or its template changed: run "
            "`python scripts/model_cards/render_gpt2_cards.py --render-only`"
        )


@pytest.mark.parametrize("name", SIZES)
def test_every_measured_number_a_card_shows_appears_in_it(script, measurements, name):
    text = (script.CARDS / f"{name}.md").read_text(encoding="utf-8")
    size, real, measured = measurements["sizes"][name], measurements["real_data"], measurements["measured"]
    shown = [
        f"| Parameters | {size['parameters']:,} ",
        f"**max |Δlogits| = {size['max_abs_logits_diff']:.3g}**",
        f"{size['safetensors_bytes'] / 1e9:.2f} GB in float32",
        f"took {size['conversion_seconds']} s",
        f"peaked at {size['peak_memory_gib']} GiB",
        f"seed {measurements['seed']}",
        measurements["parity_batch"],
        f"max |Δlogits| = {real['block0_max_abs_logits_diff']:.3g} on the same batch",
        f"|Δlogits| = {real['tf_max_abs_logits_diff']:.3g};",
        f"{real['tf_identical_tensors']} of its {real['tf_tensors']} tensors",
        f"at most {real['tf_reference_max_abs_diff']:.3g}",
        f"({real['index_tensors']} tensors, {real['index_parameters']:,} parameters)",
        *measured.values(),
    ]
    missing = [number for number in shown if number not in " ".join(text.split())]
    assert not missing


def test_measuring_a_tiny_gpt2_shape_converts_it_with_parity_below_the_fp32_limit(script, tmp_path):
    size = script.measure_size("gpt2", tmp_path, vocab_size=128, hidden_size=32, num_attention_heads=2,
                               num_hidden_layers=2, intermediate_size=128, max_position_embeddings=64,
                               bos_token_id=0, eos_token_id=0)  # fmt: skip

    with torch.device("meta"):
        expected = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=2))
    assert size["parameters"] == expected.num_parameters()
    assert 0 <= size["max_abs_logits_diff"] < FP32_PARITY_LIMIT
    assert size["safetensors_files"] == 1 and size["safetensors_bytes"] > 4 * size["parameters"]
    assert size["conversion_seconds"] >= 0 and size["peak_memory_gib"] > 0


def test_measuring_the_real_gpt2_material_reads_all_of_it(script, shared_data, tmp_path):
    real = script.measure_real_data(shared_data, tmp_path)

    assert real["block0_max_abs_logits_diff"] < FP32_PARITY_LIMIT and real["tf_max_abs_logits_diff"] < FP32_PARITY_LIMIT
    assert real["tf_identical_tensors"] == real["tf_tensors"] == 28
    assert real["tf_reference_max_abs_diff"] <= 1e-5
    assert real["index_tensors"] == 148 and real["index_parameters"] == 124_439_808


def test_measuring_without_the_shared_data_fails_at_once_in_one_line_on_stderr(script, tmp_path, capsys):
    assert script.main(["--data", str(tmp_path)]) == 1  # a folder, but not the shared one: nothing is measured
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("render_gpt2_cards.py: error: --data") and captured.err.count("\n") == 1
