"""A saved TinyLM folder loads with `trust_remote_code=True` where `hf_tinylm` itself cannot be imported."""

import torch

from tinylm_testing import build, run_without_hf_tinylm, tiny_config

# Runs where hf_tinylm cannot be imported (see `run_without_hf_tinylm`).
LOAD_WITHOUT_PACKAGE = """
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


def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = build(tiny_config(position_embedding_type="rotary", num_key_value_heads=2))
    folder = tmp_path / "tinylm-remote"
    model.save_pretrained(folder)
    ids = torch.randint(1, 64, (2, 9))
    with torch.no_grad():
        expected = {"ids": ids, "logits": model(ids).logits,
                    "generated": model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)}
    torch.save(expected, tmp_path / "expected.pt")

    result = run_without_hf_tinylm(LOAD_WITHOUT_PACKAGE, folder, tmp_path / "expected.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout
