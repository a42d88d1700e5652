"""The Transformers releases TinyLM supports: the floor is declared once per place that needs it and agrees, the
saved model files refuse an older release with one clear message, and our own calls raise no deprecation."""

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from hf_tinylm.configuration_tinylm import MIN_TRANSFORMERS_VERSION
from tinylm_testing import build, tiny_config

# Loads a saved folder through the Auto classes with the folder's own code, as a Hub user does.
LOAD_REMOTE = textwrap.dedent(
    """
    import sys
    import importlib.metadata

    folder, pretend_version = sys.argv[1], sys.argv[2]
    if pretend_version:  # what `importlib.metadata` reports for transformers, as on an older install
        real_version = importlib.metadata.version
        importlib.metadata.version = lambda name: pretend_version if name == "transformers" else real_version(name)

    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    print("loaded")
    """
)


def load_remote(python: str, folder, tmp_path, pretend_version: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run([python, "-c", LOAD_REMOTE, str(folder), pretend_version], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def saved_folder(tmp_path):
    folder = tmp_path / "tinylm"
    build(tiny_config(position_embedding_type="rotary")).save_pretrained(folder)
    return folder


def test_the_package_requires_the_transformers_floor_that_the_model_files_enforce():
    requirements = [Requirement(r) for r in importlib.metadata.requires("hf-tinylm")]
    transformers = next(r for r in requirements if r.name == "transformers")
    floor = next(Version(s.version) for s in transformers.specifier if s.operator == ">=")
    assert floor == Version(MIN_TRANSFORMERS_VERSION)
    assert Version(importlib.metadata.version("transformers")) in transformers.specifier


def test_saved_model_refuses_an_older_transformers_at_load_time(saved_folder, tmp_path):
    result = load_remote(sys.executable, saved_folder, tmp_path, pretend_version="5.23.0")
    assert result.returncode != 0 and "loaded" not in result.stdout
    assert f"transformers>={MIN_TRANSFORMERS_VERSION} is required" in result.stderr
    assert "found transformers==5.23.0" in result.stderr
    assert load_remote(sys.executable, saved_folder, tmp_path).returncode == 0


def test_saved_model_refuses_a_real_older_transformers_install(saved_folder, tmp_path):
    """`.ci/run` builds a venv with the release just below the floor and names its Python here."""
    python = os.environ.get("HF_TINYLM_BELOW_FLOOR_PYTHON")
    if not python:
        pytest.skip("HF_TINYLM_BELOW_FLOOR_PYTHON is not set (a Python whose transformers is older than the floor; "
                    ".ci/run sets it)")
    result = load_remote(python, saved_folder, tmp_path)
    assert result.returncode != 0 and "loaded" not in result.stdout
    assert f"transformers>={MIN_TRANSFORMERS_VERSION} is required" in result.stderr, result.stderr[-3000:]


# Our own calls along every main path, in a fresh process: Transformers logs each deprecation only once per process.
OWN_CALLS = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("always")
    import torch
    from transformers import AutoModelForCausalLM, StaticCache, pipeline
    from hf_tinylm import TinyLMConfig, TinyLMForCausalLM
    from hf_tinylm.training.tokenizer import byte_level_tokenizer

    folder = sys.argv[1]
    tokenizer = byte_level_tokenizer()
    for positions in ("learned", "sinusoidal", "rotary", "alibi"):
        config = TinyLMConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              position_embedding_type=positions, sliding_window=4, pad_token_id=tokenizer.pad_token_id)
        model = TinyLMForCausalLM(config)
        ids = torch.randint(1, 200, (2, 9))
        model(ids, labels=ids).loss.backward()
        model.eval()
        out = model(ids, use_cache=True)
        model(ids[:, -1:], cache=out.cache)
        model.generate(ids, max_new_tokens=4, do_sample=False, return_dict_in_generate=True).cache.get_seq_length()
        model.generate(ids, max_new_tokens=4, num_beams=2, cache_implementation="static")
        model.save_pretrained(folder)
        reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        pipeline("text-generation", model=reloaded, tokenizer=tokenizer)("def", max_new_tokens=4)
    print("done")
    """
)


def test_our_own_calls_raise_no_deprecation_warnings(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", OWN_CALLS, str(tmp_path / "model")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    assert "deprecat" not in result.stderr.lower(), result.stderr
    assert "FutureWarning" not in result.stderr, result.stderr
