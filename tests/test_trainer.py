"""`Trainer` trains TinyLM on real text, with and without gradient checkpointing, and its output reloads."""

import pytest
import torch
from transformers import GPT2TokenizerFast, Trainer, TrainingArguments

from hf_tinylm import TinyLMForCausalLM
from tinylm_testing import tiny_config


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_trainer_lowers_the_loss_on_real_text_and_the_result_reloads(checkpointing, shared_data, tmp_path):
    from datasets import Dataset

    tokenizer = GPT2TokenizerFast.from_pretrained(shared_data / "gpt2-tokenizer")
    tokenizer.pad_token = tokenizer.eos_token
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()[:60_000]
    ids = tokenizer(text).input_ids
    block = 64
    blocks = [ids[i : i + block] for i in range(0, len(ids) - block, block)]
    dataset = Dataset.from_dict({"input_ids": blocks, "labels": blocks})

    torch.manual_seed(0)
    model = TinyLMForCausalLM(tiny_config(
        vocab_size=len(tokenizer), hidden_size=64, max_position_embeddings=block,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    ))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=30, learning_rate=3e-3,
        warmup_steps=0, logging_steps=5, save_strategy="no", report_to=[], seed=0,
        activation_checkpointing=checkpointing, use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0] - 1.0, losses  # from ~10.8 (uniform over 50k tokens) down by well over a nat
    trainer.save_model(str(tmp_path / "final"))
    reloaded = TinyLMForCausalLM.from_pretrained(tmp_path / "final")
    model.eval()
    sample = torch.tensor([blocks[0]])
    with torch.no_grad():
        assert torch.equal(reloaded(sample).logits, model(sample).logits)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
