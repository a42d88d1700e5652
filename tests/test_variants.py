"""Every architecture variant (covered pairwise) decodes, batches, saves and checkpoints consistently."""

import itertools

import pytest
import torch
from safetensors import safe_open

from hf_tinylm import TinyLMForCausalLM
from tinylm_testing import (
    VARIANT_FACTORS,
    VARIANTS,
    all_pairs,
    assert_same_generation,
    build,
    generate_with_logits,
    step_logits,
    variant_config,
    variant_id,
)

TOL = 1e-5  # fp32 max abs difference between two computations of the same logits

variants = pytest.mark.parametrize("row", VARIANTS, ids=[variant_id(row) for row in VARIANTS])


def test_variant_table_covers_every_pair_of_choices():
    wanted = {
        (a, x, b, y)
        for a, b in itertools.combinations(VARIANT_FACTORS, 2)
        for x in VARIANT_FACTORS[a]
        for y in VARIANT_FACTORS[b]
    }
    assert wanted <= all_pairs(VARIANTS, VARIANT_FACTORS)


@variants
@torch.no_grad()
def test_incremental_decoding_with_cache_equals_full_forward(row):
    model = build(variant_config(row))
    ids = torch.randint(1, 64, (2, 13))
    full = model(ids).logits
    out = model(ids[:, :7], use_cache=True)
    steps = [out.logits]
    for i in range(7, 13):  # 6 single-token steps: past the sliding window of 4
        out = model(ids[:, i : i + 1], cache=out.cache, use_cache=True)
        steps.append(out.logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() <= TOL


@variants
def test_sampled_generate_is_identical_with_and_without_cache_in_tokens_and_logits(row):
    model = build(variant_config(row))
    prompt = torch.randint(1, 64, (2, 6))
    settings = dict(max_new_tokens=12, do_sample=True, top_k=0)
    with_cache = generate_with_logits(model, prompt, use_cache=True, **settings)
    assert with_cache.sequences.shape == (2, 18)
    assert len(set(with_cache.sequences[0, 6:].tolist())) >= 6, "the sampled sequence should vary"
    assert_same_generation(generate_with_logits(model, prompt, use_cache=False, **settings), with_cache, atol=TOL)


@variants
@torch.no_grad()
def test_left_padded_batch_equals_prompts_run_one_by_one(row):
    model = build(variant_config(row))
    short, long = torch.randint(1, 64, (1, 5)), torch.randint(1, 64, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1), long])
    mask = torch.ones_like(batch)
    mask[0, :4] = 0

    logits = model(batch, attention_mask=mask).logits
    assert (logits[0, 4:] - model(short).logits[0]).abs().max() <= TOL
    assert (logits[1] - model(long).logits[0]).abs().max() <= TOL

    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    batched = generate_with_logits(model, batch, attention_mask=mask, **settings)
    for row, (prompt, pads) in enumerate([(short, 4), (long, 0)]):
        alone = generate_with_logits(model, prompt, **settings)
        assert torch.equal(batched.sequences[row, pads:], alone.sequences[0])
        assert (step_logits(batched)[row] - step_logits(alone)[0]).abs().max() <= TOL


def padded_logits_by_kernel(model, *implementations):
    """Logits of one left-padded batch under each attention implementation, and the mask of real tokens."""
    ids = torch.randint(1, 64, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    logits = []
    for implementation in implementations:
        model.set_attn_implementation(implementation)
        logits.append(model(ids, attention_mask=mask).logits)
    return logits, mask.bool()


@variants
@torch.no_grad()
def test_eager_and_sdpa_attention_agree_with_padding(row):
    (eager, sdpa), real = padded_logits_by_kernel(build(variant_config(row)), "eager", "sdpa")
    assert (eager - sdpa)[real].abs().max() <= TOL


@pytest.mark.parametrize("row", VARIANTS[::3], ids=[variant_id(row) for row in VARIANTS[::3]])
@torch.no_grad()
def test_flex_attention_agrees_with_eager(row):
    """One row per position scheme: flex compiles a kernel per shape, which is slow on CPU."""
    (eager, flex), real = padded_logits_by_kernel(build(variant_config(row)), "eager", "flex_attention")
    assert (eager - flex)[real].abs().max() <= TOL


@variants
@torch.no_grad()
def test_save_and_reload_is_bit_exact_and_keeps_ties(row, tmp_path):
    config = variant_config(row)
    model = build(config)
    model.save_pretrained(tmp_path)
    reloaded = TinyLMForCausalLM.from_pretrained(tmp_path)

    ids = torch.randint(1, 64, (2, 9))
    assert torch.equal(model(ids).logits, reloaded(ids).logits)  # also proves rebuilt position buffers
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name

    tied = reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    assert tied == config.tie_word_embeddings
    with safe_open(tmp_path / "model.safetensors", "pt") as stored:
        assert ("lm_head.weight" in stored.keys()) != config.tie_word_embeddings


@variants
def test_gradient_checkpointing_gives_the_same_gradients(row):
    model = build(variant_config(row)).train()  # no dropout in these configs, so train mode is deterministic
    ids = torch.randint(1, 64, (2, 10))

    def gradients():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert model.model.layers[0].gradient_checkpointing
    checkpointed = gradients()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-7, rtol=0), name
