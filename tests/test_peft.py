"""PEFT's most common call, `get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))` without `target_modules`,
works on TinyLM: `import hf_tinylm` gives PEFT TinyLM's default targets, as PEFT's own table does for GPT-2 and
Llama. The adapter trains, saves, reloads and merges with the logits it had."""

import pytest
import torch

from tinylm_testing import VOCAB, build, tiny_config

peft = pytest.importorskip("peft", reason="PEFT is not installed (`pip install -e '.[dev]'` installs it)")
# PEFT (0.21) itself reads `model.is_gradient_checkpointing`, which Transformers 5.24 deprecates: PEFT's warning,
# not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def test_lora_without_target_modules_adapts_the_attention_projection_of_every_variant():
    for positions in ("learned", "rotary"):
        model = peft.get_peft_model(build(tiny_config(position_embedding_type=positions)),
                                    peft.LoraConfig(task_type="CAUSAL_LM"))
        adapted = sorted(name for name, module in model.named_modules() if isinstance(module, peft.tuners.lora.Linear))
        assert adapted == [f"base_model.model.model.layers.{i}.self_attn.{x}_proj" for i in range(2) for x in "qv"]
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        assert trainable and all("lora_" in name for name in trainable)


def test_a_trained_adapter_saves_reloads_and_merges_with_the_same_logits(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        base_logits = build(tiny_config())(ids).logits
    model = peft.get_peft_model(build(tiny_config()), peft.LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        assert (trained - base_logits).abs().max() > 1e-3  # the trained adapter changes the model
        model.save_pretrained(tmp_path / "adapter")
        reloaded = peft.PeftModel.from_pretrained(build(tiny_config()), tmp_path / "adapter").eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, trained, rtol=0, atol=1e-6)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, trained, rtol=0, atol=1e-5)
