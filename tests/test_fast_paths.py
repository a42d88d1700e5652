"""The fast paths compute what the plain ones do: sync-free decode steps, compiled static-cache decoding, the chunked
language-modelling loss."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import CompileConfig, StaticCache
from transformers.loss.loss_utils import ForCausalLMLoss

from hf_tinylm.modeling_tinylm import chunked_causal_lm_loss
from tinylm_testing import assert_same_generation, assert_same_logits, build, generate_with_logits, tiny_config


class DeviceReads(TorchDispatchMode):
    """Counts the reads of a tensor's value back to the host (`int()`, `.item()`, `bool()` of a tensor: the calls
    that make a host wait for a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary", "alibi"])
@pytest.mark.parametrize("window", [None, 4], ids=["full", "window"])
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])  # unpadded: `generate` drops the mask
@torch.no_grad()
def test_decode_step_reads_nothing_back_from_the_device(positions, window, cache_kind, padded):
    model = build(tiny_config(position_embedding_type=positions, sliding_window=window))
    ids = torch.randint(1, 64, (2, 6))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :2] = 0
    cache = StaticCache(config=model.config, max_cache_len=16) if cache_kind == "static" else None
    with DeviceReads() as prefill:
        cache = model(ids, attention_mask=mask[:, :6] if padded else None, cache=cache, use_cache=True).cache
    assert prefill.count > 0  # the prompt is checked (token ids, positions)
    with DeviceReads() as step:
        model(ids[:, :1], attention_mask=mask if padded else None, cache=cache, use_cache=True,
              position_ids=torch.tensor([[4], [6]]))
    assert step.count == 0


@pytest.mark.parametrize("positions", ["learned", "rotary", "alibi"])
@torch.no_grad()
def test_left_padded_decode_step_gives_the_logits_of_a_full_forward(positions):
    """The decode step builds SDPA's mask from the padding mask alone; it must mask exactly what the full
    causal mask does."""
    model = build(tiny_config(position_embedding_type=positions))
    ids = torch.randint(1, 64, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :3] = mask[1, :1] = 0
    expected = model(ids, attention_mask=mask).logits[:, -1]
    cache = model(ids[:, :6], attention_mask=mask[:, :6], use_cache=True).cache
    step = model(ids[:, 6:], attention_mask=mask, cache=cache, use_cache=True,
                 position_ids=mask.cumsum(-1)[:, 6:] - 1).logits[:, -1]
    assert_same_logits(step, expected)


def test_tokens_entering_after_the_prompt_are_still_checked():
    model = build(tiny_config())
    cache = model(torch.randint(1, 64, (1, 4)), use_cache=True).cache
    with pytest.raises(ValueError, match=r"Token id 64 is outside this model's vocabulary"):
        model(torch.tensor([[1, 64]]), cache=cache, use_cache=True)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_decoding_past_the_position_table_is_still_refused(positions, cache_kind):
    model = build(tiny_config(position_embedding_type=positions, max_position_embeddings=16))
    settings = dict(max_new_tokens=10, do_sample=False)
    if cache_kind == "static":
        settings["cache_implementation"] = "static"
    with pytest.raises(ValueError, match="needs 17 positions .* max_position_embeddings=16"):
        model.generate(torch.randint(1, 64, (1, 10)), **settings)


@pytest.mark.parametrize("positions", ["learned", "rotary"])  # each compiles for ~20 s; ALiBi: test_ecosystem
def test_compiled_static_cache_decoding_gives_the_tokens_and_logits_of_eager_dynamic_decoding(positions):
    torch._dynamo.reset()
    model = build(tiny_config(position_embedding_type=positions, num_key_value_heads=2))
    prompt = torch.randint(1, 64, (2, 5))
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    expected = generate_with_logits(model, prompt, **settings)
    # fullgraph: a graph break in the decode step fails the test; inductor: the compiler `generate` would use.
    compile_config = CompileConfig(fullgraph=True, mode="default")
    compile_config._compile_all_devices = True  # `generate` compiles on CPU only when told to
    compiled = generate_with_logits(model, prompt, cache_implementation="static", compile_config=compile_config,
                                    **settings)
    assert hasattr(model, "_compiled_call")  # `generate` did compile the forward
    assert_same_generation(compiled, expected, atol=1e-4)  # inductor fuses and reorders fp32 sums


def plain_loss_and_gradients(model, ids, labels, **loss_kwargs):
    """The loss as Transformers computes it, from the full logits: the reference for the chunked loss."""
    model.zero_grad()
    logits = model(ids).logits
    loss = ForCausalLMLoss(logits, labels, model.config.vocab_size, **loss_kwargs)
    loss.backward()
    return loss.detach(), {name: param.grad.clone() for name, param in model.named_parameters()}


def chunked_loss_and_gradients(model, ids, labels, **loss_kwargs):
    model.zero_grad()
    loss = model(ids, labels=labels, **loss_kwargs).loss
    loss.backward()
    return loss.detach(), {name: param.grad.clone() for name, param in model.named_parameters()}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("num_items", [None, 7], ids=["mean", "num-items-in-batch"])
def test_training_loss_and_gradients_equal_the_plain_loss(tied, num_items):
    model = build(tiny_config(vocab_size=300, tie_word_embeddings=tied)).train()  # no dropout: train is deterministic
    ids = torch.randint(0, 300, (3, 10))
    labels = ids.clone()
    labels[0, :4] = -100  # e.g. a prompt excluded from the loss
    extra = {} if num_items is None else dict(num_items_in_batch=torch.tensor(num_items))
    expected_loss, expected = plain_loss_and_gradients(model, ids, labels, **extra)
    loss, gradients = chunked_loss_and_gradients(model, ids, labels, **extra)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=0)
    for name in expected:  # fp32: summation order only (~1e-7 relative)
        torch.testing.assert_close(gradients[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("block", [1, 40, 150, 10**6], ids=lambda b: f"block{b}")  # one column ... everything at once
def test_loss_computed_a_block_at_a_time_equals_cross_entropy_and_keeps_the_logits_differentiable(block):
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9))
    labels[1, 3] = -100

    def total(logits, loss):  # an extra term on the logits, as a z-loss or distillation term would add
        return loss + 1e-3 * logits.square().mean()

    logits, loss = chunked_causal_lm_loss(hidden, weight, labels, block=block)
    grads = torch.autograd.grad(total(logits, loss), (hidden, weight))
    plain_logits = hidden @ weight.T
    plain_loss = ForCausalLMLoss(plain_logits, labels, 50)
    expected = torch.autograd.grad(total(plain_logits, plain_loss), (hidden, weight))
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=0)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_training_loss_and_gradients_stay_within_bf16_rounding_of_the_plain_loss():
    model = build(tiny_config(vocab_size=300)).train()
    ids = torch.randint(0, 300, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected_loss, expected = plain_loss_and_gradients(model, ids, ids)
        loss, gradients = chunked_loss_and_gradients(model, ids, ids)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-3, atol=0)  # the same bf16 logits, summed in fp32
    for name in expected:  # bf16 matmuls: 8 bits of mantissa, rounded at different points
        # k's bias adds the same amount to all of a query's scores, which softmax ignores: its exact gradient is 0,
        # the computed one rounding noise, so it is measured against the scale of q's bias gradient.
        scale = expected[name.replace("k_proj.bias", "q_proj.bias")].abs().max()
        torch.testing.assert_close(gradients[name], expected[name], rtol=0, atol=2e-2 * scale, msg=name)


def saved_for_backward_bytes(run) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while `run()` builds the graph."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return total


def test_training_forward_keeps_no_copy_of_the_full_logits_for_the_backward():
    vocab, batch, length = 4096, 2, 64  # a large vocabulary next to a small model: the logits dominate
    model = build(tiny_config(vocab_size=vocab)).train()
    ids = torch.randint(0, vocab, (batch, length))
    logits_bytes = batch * length * vocab * 4
    plain = saved_for_backward_bytes(lambda: ForCausalLMLoss(model(ids).logits, ids, vocab))
    chunked = saved_for_backward_bytes(lambda: model(ids, labels=ids).loss)
    assert plain - chunked >= logits_bytes  # the plain loss keeps at least the fp32 log-softmax of every logit


def test_a_second_backward_through_the_chunked_loss_is_refused_not_silently_wrong():
    model = build(tiny_config()).train()
    ids = torch.randint(0, 64, (2, 6))
    loss = model(ids, labels=ids).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass per forward"):
        loss.backward()
