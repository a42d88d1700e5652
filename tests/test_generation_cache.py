"""Canaries for the KV cache as `generate` and `pipeline` use it, for every position scheme.

They go through the public paths (`generate`, `pipeline`), not a hand-made cache, and compare logits, not the
greedy tokens of a random model: Transformers 5.24 renamed the cache argument to `cache`, a forward that swallowed
it into `**kwargs` decoded every step without its past, and token equality did not see it.
"""

import pytest
import torch
from transformers import GenerationConfig, StaticCache, pipeline, set_seed
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from hf_tinylm.training.tokenizer import byte_level_tokenizer
from tinylm_testing import (
    assert_not_degenerate,
    assert_same_generation,
    assert_same_logits,
    build,
    step_logits,
    tiny_config,
)

PROMPT_LENGTH, NEW_TOKENS = 6, 16
POSITIONS = ["learned", "sinusoidal", "rotary", "alibi"]

schemes = pytest.mark.parametrize(
    ("positions", "window"),
    [(positions, window) for positions in POSITIONS for window in (None, 4)],
    ids=[f"{positions}-{'window4' if window else 'full'}" for positions in POSITIONS for window in (None, 4)],
)


def canary_model(positions, window=None, **overrides):
    """A random model whose greedy output does not collapse: untied, so the head does not simply echo the input
    token, and with weights five times GPT-2's scale, so its logits (about ±2) vary with the context."""
    config = tiny_config(position_embedding_type=positions, sliding_window=window, num_key_value_heads=2,
                         initializer_range=0.1, tie_word_embeddings=False, **overrides)
    return build(config, seed=1)


def prompt(batch=3):
    return torch.randint(1, 64, (batch, PROMPT_LENGTH), generator=torch.Generator().manual_seed(1))


def generate(model, ids, **kwargs):
    settings = dict(max_new_tokens=NEW_TOKENS, return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    return model.generate(ids, **{**settings, **kwargs})


@schemes
@torch.no_grad()
def test_sampled_generation_scores_equal_a_full_forward_over_the_result(positions, window):
    model = canary_model(positions, window)
    set_seed(0)
    output = generate(model, prompt(), do_sample=True, top_k=0)
    assert_not_degenerate(output.sequences[:, PROMPT_LENGTH:], at_least=8)
    full = model(output.sequences).logits[:, PROMPT_LENGTH - 1 : -1]
    assert_same_logits(step_logits(output), full)


@schemes
@torch.no_grad()
def test_greedy_generation_with_cache_equals_without(positions, window):
    model = canary_model(positions, window)
    cached = generate(model, prompt())
    uncached = generate(model, prompt(), use_cache=False)
    assert_not_degenerate(cached.sequences[:, PROMPT_LENGTH:], at_least=2)
    assert_same_generation(cached, uncached)


@pytest.mark.parametrize("positions", POSITIONS)
@torch.no_grad()
def test_returned_cache_holds_the_sequence_and_continues_it_like_a_full_forward(positions):
    model = canary_model(positions)
    output = generate(model, prompt())
    # The last generated token has not been through the model yet, so it is not in the cache.
    assert output.cache.get_seq_length() == PROMPT_LENGTH + NEW_TOKENS - 1
    continued = model(output.sequences[:, -1:], cache=output.cache, use_cache=True)
    assert continued.cache is output.cache and output.cache.get_seq_length() == PROMPT_LENGTH + NEW_TOKENS
    assert_same_logits(continued.logits[:, -1], model(output.sequences).logits[:, -1])


@pytest.mark.parametrize("positions", POSITIONS)
@torch.no_grad()
def test_beam_search_with_cache_equals_without(positions):
    model = canary_model(positions)
    settings = dict(num_beams=3, num_return_sequences=2, output_scores=True)
    cached = generate(model, prompt(), **settings)
    uncached = generate(model, prompt(), use_cache=False, **settings)
    assert_not_degenerate(cached.sequences[:, PROMPT_LENGTH:], at_least=2)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert_same_logits(cached.sequences_scores, uncached.sequences_scores)


@pytest.mark.parametrize("positions", POSITIONS)
@torch.no_grad()
def test_assisted_decoding_equals_greedy_decoding(positions):
    """A draft model proposes tokens, the cache is cropped back after rejections: the result must not change."""
    model = canary_model(positions)
    assistant = build(model.config, seed=2)  # a different model, so that some drafts are rejected
    greedy = generate(model, prompt(batch=1))
    assisted = generate(model, prompt(batch=1), assistant_model=assistant)
    assert_same_generation(assisted, greedy)


@pytest.mark.parametrize("positions", POSITIONS)
@torch.no_grad()
def test_static_cache_generation_equals_dynamic_cache_generation(positions):
    model = canary_model(positions)
    dynamic = generate(model, prompt())
    static = generate(model, prompt(), cache_implementation="static")
    assert isinstance(static.cache, StaticCache)
    assert_same_generation(static, dynamic)


@pytest.mark.parametrize("positions", POSITIONS)
def test_pipeline_text_with_cache_equals_without(positions):
    tokenizer = byte_level_tokenizer()
    model = canary_model(positions, vocab_size=len(tokenizer), eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    texts = []
    for use_cache in (True, False):
        set_seed(0)
        result = generator("def main():", max_new_tokens=24, do_sample=True, top_k=0, use_cache=use_cache,
                           return_full_text=False)
        texts.append(result[0]["generated_text"])
    assert len(set(texts[0])) >= 8, f"degenerate generation {texts[0]!r}"
    assert texts[0] == texts[1]


@torch.no_grad()
def test_the_old_cache_argument_name_still_reaches_the_cache():
    """Callers written for Transformers < 5.24 pass `past_key_values=`: it must be used, not swallowed."""
    model = canary_model("rotary")
    ids = prompt()
    first = model(ids[:, :-1], use_cache=True)
    with pytest.warns(FutureWarning, match="past_key_values"):
        step = model(ids[:, -1:], past_key_values=first.cache, use_cache=True)
    assert first.cache.get_seq_length() == PROMPT_LENGTH
    assert_same_logits(step.logits[:, -1], model(ids).logits[:, -1])


def paged_cache_config(**settings) -> ContinuousBatchingConfig:
    """A paged cache sized for these tests: the default one is sized from free memory and takes seconds to set up."""
    return ContinuousBatchingConfig(num_blocks=4, page_size=16, max_batch_tokens=64, **settings)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
@torch.no_grad()
def test_continuous_batching_gives_the_tokens_and_log_probabilities_of_generate(positions):
    """`generate_batch` feeds a paged cache through `Cache.update(..., kwargs=...)` and packed position ids."""
    model = canary_model(positions)
    prompts = prompt(batch=2)
    prompts[0, :2] = 0  # two prompts of different lengths
    requests = [prompts[0, 2:].tolist(), prompts[1].tolist()]
    settings = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=-1, pad_token_id=0)
    results = model.generate_batch(requests, settings, paged_cache_config(return_logprobs=True))
    for result, request in zip(sorted(results.values(), key=lambda r: r.request_id), requests):
        assert result.error is None, result.error
        reference = generate(model, torch.tensor([request]))
        tokens = reference.sequences[0, len(request) :]
        log_probs = step_logits(reference)[0].log_softmax(-1)[torch.arange(NEW_TOKENS), tokens]
        assert result.generated_tokens == tokens.tolist()
        assert_same_logits(torch.tensor(result.logprobs), log_probs)


@torch.no_grad()
def test_continuous_batching_refuses_alibi_clearly():
    model = canary_model("alibi")
    settings = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=-1, pad_token_id=0)
    results = model.generate_batch([prompt(batch=1)[0].tolist()], settings, paged_cache_config())
    assert all("ALiBi" in (result.error or "") for result in results.values())
