"""A saved TinyLM folder loads with `trust_remote_code=True` where `hf_tinylm` itself cannot be imported, and so
does one in the fused-qkv layout of earlier versions (the folder's code registers the conversion)."""

import torch

from tinylm_testing import build, run_without_hf_tinylm, save_in_fused_qkv_layout, tiny_config

# Runs where hf_tinylm cannot be imported (see `run_without_hf_tinylm`).
LOAD_WITHOUT_PACKAGE = """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    folder, expected_path, fused_folder = sys.argv[1], sys.argv[2], sys.argv[3]
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

    from safetensors.torch import load_file

    fused = AutoModelForCausalLM.from_pretrained(fused_folder, trust_remote_code=True)
    with torch.no_grad():
        assert torch.equal(fused(expected["ids"]).logits, expected["logits"])
    fused.save_pretrained("resaved")
    names = load_file("resaved/model.safetensors")
    assert "model.layers.0.self_attn.k_proj.weight" in names and not any("qkv_proj" in name for name in names)
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
    model.save_pretrained(tmp_path / "fused")
    save_in_fused_qkv_layout(model, tmp_path / "fused")

    result = run_without_hf_tinylm(LOAD_WITHOUT_PACKAGE, folder, tmp_path / "expected.pt", tmp_path / "fused",
                                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout
