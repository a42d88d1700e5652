"""What serving engines (vLLM's and SGLang's Transformers backends) and pipeline parallelism do to a model.

The engines register an attention function of their own, set it in the config before building the model, and pass it
only q, k, v, the mask and the scaling: extra kwargs are dropped. ALiBi reaches attention as such a kwarg
(`position_bias`), so under such a backend an ALiBi model is refused where the implementation is chosen, instead of
running without positions. The backend here is a stand-in written the same way (vLLM and SGLang themselves are not
run here). Pipeline stages are built as Transformers' own pipeline parallelism builds them."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.distributed.pipeline_parallel import PipelineIdentityLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_tinylm import TinyLMForCausalLM, TinyLMPreTrainedModel
from tinylm_testing import VOCAB, build, tiny_config

BACKEND = "engine_backend"


def engine_attention(module, query, key, value, attention_mask, scaling=None, **dropped):
    """As an engine's attention function: the projections' q, k, v and the scaling, every other kwarg dropped."""
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling)


@pytest.fixture
def engine_backend():
    ALL_ATTENTION_FUNCTIONS.register(BACKEND, engine_attention)
    yield BACKEND
    del ALL_ATTENTION_FUNCTIONS._global_mapping[BACKEND]


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_variants_without_an_attention_bias_give_the_same_logits_under_an_engine_backend(positions, engine_backend):
    model = build(tiny_config(position_embedding_type=positions))
    ids = torch.randint(1, VOCAB, (2, 9))
    with torch.no_grad():
        expected = model(ids).logits
        model.set_attn_implementation(engine_backend)
        assert model.config._attn_implementation == engine_backend
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=1e-5)


# What an engine backend cannot express: the config, and the refusal that names it.
UNEXPRESSIBLE = {
    "alibi": ({"position_embedding_type": "alibi"}, "cannot add ALiBi's attention bias"),
    "sliding-window": ({"position_embedding_type": "rotary", "sliding_window": 3}, "ignores the sliding window"),
}


@pytest.mark.parametrize("kind", UNEXPRESSIBLE)
def test_what_an_engine_backend_cannot_express_would_silently_change_the_logits(kind, engine_backend, monkeypatch):
    """The damage the refusal prevents: with the check switched off, the backend runs without an error."""
    fields, _ = UNEXPRESSIBLE[kind]
    model = build(tiny_config(**fields))
    ids = torch.randint(1, VOCAB, (1, 9))
    with torch.no_grad():
        expected = model(ids).logits
        monkeypatch.setattr(TinyLMPreTrainedModel, "_refuse_attention_that_changes_the_math", lambda self, name: None)
        model.set_attn_implementation(engine_backend)
        assert (model(ids).logits - expected).abs().max() > 1e-2  # a thousand times the tolerance of agreement


@pytest.mark.parametrize("kind", UNEXPRESSIBLE)
def test_what_an_engine_backend_cannot_express_is_refused_where_the_backend_is_chosen(kind, engine_backend, tmp_path):
    fields, refusal = UNEXPRESSIBLE[kind]
    model = build(tiny_config(**fields))
    with pytest.raises(ValueError, match=refusal):  # switched at run time
        model.set_attn_implementation(engine_backend)
    config = tiny_config(**fields)
    config._attn_implementation = engine_backend  # how the engines build the model
    with pytest.raises(ValueError, match=refusal):
        TinyLMForCausalLM(config)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=refusal):
        AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation=engine_backend)


def test_alibi_is_refused_when_run_under_a_backend_set_behind_the_hooks_back(engine_backend):
    model = build(tiny_config(position_embedding_type="alibi"))
    model.config._attn_implementation_internal = engine_backend
    with pytest.raises(ValueError, match="cannot add ALiBi's attention bias"):
        model(torch.randint(1, VOCAB, (1, 9)))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary", "alibi"])
def test_two_pipeline_stages_give_the_hidden_states_of_the_whole_model(positions):
    """As Transformers', vLLM's and SGLang's pipeline parallelism runs a model: each stage holds some layers, the
    others are identity stand-ins, and the second stage gets the first one's hidden states as `inputs_embeds`.
    Absolute positions must be added once, not again on the second stage."""
    model = build(tiny_config(position_embedding_type=positions)).model
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    first.layers[1], first.norm = PipelineIdentityLayer(), PipelineIdentityLayer()
    second.layers[0], second.embed_tokens = PipelineIdentityLayer(), PipelineIdentityLayer()
    ids = torch.randint(1, VOCAB, (2, 9))
    with torch.no_grad():
        hidden = first(ids, use_cache=False).last_hidden_state
        staged = second(inputs_embeds=hidden, use_cache=False).last_hidden_state
        torch.testing.assert_close(staged, model(ids, use_cache=False).last_hidden_state, rtol=0, atol=1e-6)

