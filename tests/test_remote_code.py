"""A saved TinyLM folder loads with `trust_remote_code=True` where `hf_tinylm` itself cannot be imported."""

import os
import subprocess
import sys
import textwrap

import torch

from tinylm_testing import build, tiny_config

# Runs in a fresh interpreter in which importing hf_tinylm fails, as on a machine that only has the Hub folder.
LOAD_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class RefuseHfTinyLM(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hf_tinylm":
                raise ImportError("hf_tinylm is not installed here")

    sys.meta_path.insert(0, RefuseHfTinyLM())
    try:
        import hf_tinylm
        raise SystemExit("hf_tinylm was importable: the test would prove nothing")
    except ImportError:
        pass

    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    folder, expected_path = sys.argv[1], sys.argv[2]
    expected = torch.load(expected_path)
    try:
        AutoModelForCausalLM.from_pretrained(folder)
        raise SystemExit("loading custom code without trust_remote_code should be refused")
    except ValueError as error:
        assert "trust_remote_code" in str(error), error
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(model(expected["ids"]).logits, expected["logits"])
    generated = model.generate(expected["ids"][:, :4], max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, expected["generated"]), generated
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(base).__name__ == "TinyLMModel"
    print("remote code OK")
    """
)


def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = build(tiny_config(position_embedding_type="rotary", num_key_value_heads=2))
    folder = tmp_path / "tinylm-remote"
    model.save_pretrained(folder)
    ids = torch.randint(1, 64, (2, 9))
    with torch.no_grad():
        expected = {"ids": ids, "logits": model(ids).logits,
                    "generated": model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)}
    torch.save(expected, tmp_path / "expected.pt")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(folder), str(tmp_path / "expected.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout
