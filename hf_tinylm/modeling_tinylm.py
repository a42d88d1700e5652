"""The TinyLM decoder-only language model, built the way Transformers 5 builds its own models.

Read top to bottom: norms -> position schemes -> attention -> MLP -> decoder block -> loss -> pretrained base ->
`TinyLMModel` -> `TinyLMForCausalLM` -> the task heads -> loading checkpoints of earlier versions. Notation in shape
comments: B batch, T query length, S key/value length, H query heads, K key/value heads, D head dim, E hidden size.

This file is copied next to the weights by `save_pretrained` (for `trust_remote_code`), so besides
`torch`, `transformers` and the standard library it imports only `.configuration_tinylm`.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Split, WeightConverter
from transformers.generation import GenerationMixin
from transformers.generation.continuous_batching.cache import PagedAttentionCache
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import is_flash_attention_requested, merge_with_config_defaults
from transformers.utils.import_utils import is_torchdynamo_compiling
from transformers.utils.output_capturing import capture_outputs

from .configuration_tinylm import TinyLMConfig

# ----------------------------------------------------------------------------------------------- norms


class TinyLMRMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019), computed in float32 as Llama does so low-precision runs stay stable."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(hidden_states.float(), hidden_states.shape[-1:], eps=self.eps)
        return self.weight * normed.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def build_norm(config: TinyLMConfig) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return TinyLMRMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


# ----------------------------------------------------------------------------------------------- positions


def _check_positions_fit(position_ids: torch.Tensor, max_positions: int, kind: str, upper_bound: int | None) -> None:
    """Absolute position tables have `max_positions` rows: a longer input must fail here, clearly. `upper_bound`, a
    bound on the positions known on the host, spares reading them from the device while it fits the table."""
    if is_torchdynamo_compiling() or (upper_bound is not None and upper_bound <= max_positions):
        return
    needed = int(position_ids.max()) + 1
    if needed > max_positions:
        raise ValueError(
            f"The input needs {needed} positions but this model's {kind} position embeddings cover "
            f"max_position_embeddings={max_positions}. Shorten the input (prompt plus max_new_tokens), or use a "
            "model with rotary or ALiBi positions, which have no fixed limit."
        )


class TinyLMLearnedPositionalEmbedding(nn.Embedding):
    """GPT-2's learned absolute positions: one trained vector per position."""


class TinyLMSinusoidalPositionalEmbedding(nn.Module):
    """The fixed sine/cosine table of 'Attention Is All You Need', built once (a non-persistent buffer)."""

    def __init__(self, max_positions: int, hidden_size: int):
        super().__init__()
        self.max_positions = max_positions
        self.hidden_size = hidden_size
        self.weight = nn.Buffer(self.compute_table(max_positions, hidden_size), persistent=False)

    @staticmethod
    def compute_table(max_positions: int, hidden_size: int) -> torch.Tensor:
        # table[p, 2i] = sin(p / 10000^(2i/E)), table[p, 2i+1] = cos(p / 10000^(2i/E))
        position = torch.arange(max_positions, dtype=torch.float32)[:, None]
        inv_freq = torch.exp(torch.arange(0, hidden_size, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden_size))
        table = torch.zeros(max_positions, hidden_size)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)[:, : hidden_size // 2]
        return table

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(position_ids, self.weight)


class TinyLMRotaryEmbedding(nn.Module):
    """RoPE (Su et al., 2021): cos/sin of position x inverse frequency, for any `rope_type` Transformers knows."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.config = config
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: TinyLMConfig, device=None, **kwargs) -> tuple[torch.Tensor, float]:
        base, dim = config.rope_parameters["rope_theta"], config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
        return inv_freq, 1.0

    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device)  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (B, H, T, D) queries and keys by (B, T, D) cos/sin (the half-split layout of Transformers' Llama)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class TinyLMALiBi(nn.Module):
    """ALiBi (Press et al., 2022): no position vectors; each head adds `slope * (key_pos - query_pos)` to its scores."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.slopes = nn.Buffer(self.compute_slopes(num_heads), persistent=False)

    @staticmethod
    def compute_slopes(num_heads: int) -> torch.Tensor:
        """Geometric slopes 2^(-8/n), 2^(-16/n), ...; for a head count that is not a power of two, the paper's
        recipe: the slopes of the nearest lower power of two, then every other slope of the next one."""

        def power_of_two_slopes(n: int) -> list[float]:
            start = 2.0 ** (-8.0 / n)
            return [start ** (i + 1) for i in range(n)]

        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two_slopes(closest)
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
        return torch.tensor(slopes, dtype=torch.float32)

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor, batch_size: int, dtype):
        """The (B, H, T, S) additive bias for queries at (B or 1, T) positions and keys at (B or 1, S) positions."""
        distance = (key_positions[:, None, :] - query_positions[:, :, None]).to(torch.float32)  # <= 0 where attended
        bias = self.slopes[None, :, None, None] * distance[:, None]  # (B or 1, H, T, S)
        return bias.to(dtype).expand(batch_size, -1, -1, -1)


# ----------------------------------------------------------------------------------------------- attention


class TinyLMResidualProjection(nn.Linear):
    """A projection that writes into the residual stream (attention output, MLP output): GPT-2 initialises these
    with a smaller std, see `TinyLMPreTrainedModel._init_weights`."""


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, K, S, D) -> (B, K * n_rep, S, D): each key/value head serves `n_rep` query heads."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, length, head_dim = hidden_states.shape
    expanded = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, length, head_dim)
    return expanded.reshape(batch, kv_heads * n_rep, length, head_dim)


# Transformers' attention kernels that add the `position_bias` kwarg (ALiBi's) to the scores. They and flash also
# honour a sliding window (through the mask, or the `sliding_window` kwarg).
ATTENTION_WITH_POSITION_BIAS = ("eager", "sdpa", "flex_attention")


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax(q·k * scaling + bias + mask)·v; the reference the fused kernels are tested against."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, S)
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, T, H, D)
    return output, weights


class TinyLMAttention(nn.Module):
    """Causal self-attention with K key/value heads shared by H query heads.

    K == H is multi-head, K == 1 multi-query, anything in between grouped-query attention. q, k and v have a
    projection each, so tensor parallelism shards them by heads (`colwise`, see `base_model_tp_plan`): every head
    count below is read from the tensors, which then hold this rank's heads. The kernel is chosen by
    `config._attn_implementation` through Transformers' attention interface (eager, sdpa, flex, flash).
    """

    def __init__(self, config: TinyLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_causal = True
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.sliding_window = config.sliding_window
        self.attention_dropout = config.attention_dropout
        scale = config.attention_scale if config.attention_scale is not None else self.head_dim**-0.5
        self.scaling = scale / (layer_idx + 1) if config.scale_attn_by_inverse_layer_idx else scale
        q_size, kv_size = self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = TinyLMResidualProjection(q_size, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        heads_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = self.q_proj(hidden_states).view(heads_shape).transpose(1, 2)  # (B, H, T, D)
        key = self.k_proj(hidden_states).view(heads_shape).transpose(1, 2)  # (B, K, T, D)
        value = self.v_proj(hidden_states).view(heads_shape).transpose(1, 2)  # (B, K, T, D)
        if position_embeddings is not None:
            query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)  # (B, K, S, D)

        if (position_bias := kwargs.get("position_bias")) is not None and position_bias.shape[1] != query.shape[1]:
            kwargs["position_bias"] = self._bias_of_this_rank_heads(position_bias, query.shape[1])

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )
        output = self.o_proj(output.reshape(*hidden_states.shape[:-1], -1))
        return output, weights

    def _bias_of_this_rank_heads(self, position_bias: torch.Tensor, heads: int) -> torch.Tensor:
        """The base model builds ALiBi's (B, H, T, S) bias for all heads. Under tensor parallelism `q_proj` is
        sharded `colwise`, so this rank holds the `heads` query heads of block `rank` (a DTensor knows its rank on
        the host: nothing waits for the device)."""
        mesh = getattr(self.q_proj.weight, "device_mesh", None)
        if mesh is None:
            raise ValueError(
                f"The attention bias has {position_bias.shape[1]} heads but the queries have {heads}, and q_proj is "
                "not sharded by tensor parallelism: nothing says which heads these are."
            )
        rank = mesh.get_local_rank()
        return position_bias[:, rank * heads : (rank + 1) * heads]  # (B, heads, T, S)


# ----------------------------------------------------------------------------------------------- MLP


class TinyLMMLP(nn.Module):
    """GPT-2's two-layer MLP, `down(act(up(x)))`."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = TinyLMResidualProjection(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(x)))


class TinyLMGatedMLP(nn.Module):
    """The gated MLP of Shazeer (2020), `down(act(gate(x)) * up(x))`: SwiGLU with `silu`, GeGLU with `gelu`."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = TinyLMResidualProjection(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


# ----------------------------------------------------------------------------------------------- block


class TinyLMDecoderLayer(GradientCheckpointingLayer):
    """One transformer block: attention then MLP, each on a residual branch.

    pre-norm (GPT-2, Llama):          x = x + attn(attn_norm(x));  x = x + mlp(mlp_norm(x))
    post-norm (Vaswani et al., 2017): x = attn_norm(x + attn(x));  x = mlp_norm(x + mlp(x))
    """

    def __init__(self, config: TinyLMConfig, layer_idx: int):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn_norm = build_norm(config)
        self.self_attn = TinyLMAttention(config, layer_idx)
        self.mlp_norm = build_norm(config)
        self.mlp = TinyLMGatedMLP(config) if config.mlp_type == "glu" else TinyLMMLP(config)
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        if self.pre_norm:
            hidden_states = self.attn_norm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states,
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = residual + self.residual_dropout(hidden_states)
        if not self.pre_norm:
            hidden_states = self.attn_norm(hidden_states)

        residual = hidden_states
        if self.pre_norm:
            hidden_states = self.mlp_norm(hidden_states)
        hidden_states = residual + self.residual_dropout(self.mlp(hidden_states))
        if not self.pre_norm:
            hidden_states = self.mlp_norm(hidden_states)
        return hidden_states


# ----------------------------------------------------------------------------------------------- loss


class LMHeadCrossEntropy(torch.autograd.Function):
    """The logits `hidden @ weight.T` and their summed cross-entropy against `targets` (-100: ignored), with the
    loss's gradients (softmax minus the one-hot target) formed in the forward, one block of vocabulary columns at a
    time. So no fp32 copy, log-softmax or gradient of the whole (N, V) logits ever exists (at GPT-2's vocabulary
    each is as large as the rest of a small batch's activations), while every matmul keeps a full inner dimension
    and each weight-gradient row is written once. The logits stay differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, block):
        # hidden (N, E), weight (V, E), targets (N,) -> logits (N, V) in the matmul's (autocast) dtype, loss ()
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(hidden, weight)
        (rows, vocab), (need_hidden, need_weight) = (hidden.shape[0], weight.shape[0]), ctx.needs_input_grad[:2]
        logits = F.linear(hidden, weight)
        valid = targets != -100
        picked = targets.clamp(min=0)[:, None]  # ignored rows pick token 0, then count for nothing
        step = max(1, block // vocab)
        log_norm = torch.cat([torch.logsumexp(logits[i : i + step].float(), dim=-1) for i in range(0, rows, step)])
        loss = ((log_norm - logits.gather(1, picked).squeeze(1).float()) * valid).sum()

        ctx.grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if need_hidden else None
        ctx.grad_weight = torch.empty_like(weight) if need_weight else None
        ctx.released = False
        step = max(1, block // rows)
        for first in range(0, vocab if need_hidden or need_weight else 0, step):
            columns = slice(first, first + step)
            grad = (logits[:, columns].float() - log_norm[:, None]).exp_()  # softmax, (N, C)
            targeted = valid & (targets >= first) & (targets < first + grad.shape[1])
            target_column = (targets - first).clamp(0, grad.shape[1] - 1)[:, None]
            grad.scatter_add_(1, target_column, -targeted[:, None].to(grad.dtype))  # minus the one-hot target
            grad = grad.mul_(valid[:, None]).to(logits.dtype)  # d loss / d logits of these columns
            if need_hidden:
                ctx.grad_hidden += grad @ weight[columns]
            if need_weight:
                ctx.grad_weight[columns] = grad.T @ hidden
        return logits, loss

    @staticmethod
    def backward(ctx, grad_logits, grad_loss):
        hidden, weight = ctx.saved_tensors
        grad_hidden = grad_weight = None
        if grad_loss is not None:
            if ctx.released:
                raise RuntimeError("The chunked LM loss supports one backward pass per forward (no retain_graph).")
            # Scaled in place and released: a (V, E) gradient held to the end of the backward would add to its peak.
            grad_hidden, grad_weight, ctx.grad_hidden, ctx.grad_weight = ctx.grad_hidden, ctx.grad_weight, None, None
            ctx.released = True
            grad_hidden = grad_hidden.mul_(grad_loss).to(hidden.dtype) if grad_hidden is not None else None
            grad_weight = grad_weight.mul_(grad_loss) if grad_weight is not None else None
        if grad_logits is not None:  # the caller used the logits too
            grad_logits = grad_logits.to(weight.dtype)
            extra_hidden, extra_weight = grad_logits @ weight, grad_logits.T @ hidden.to(weight.dtype)
            grad_hidden = extra_hidden if grad_hidden is None else grad_hidden + extra_hidden
            grad_weight = extra_weight if grad_weight is None else grad_weight + extra_weight
        return grad_hidden, grad_weight, None, None


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    block: int = 2**23,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of a bias-free LM head on (B, T, E) hidden states: Transformers' `ForCausalLMLoss` (labels
    shifted inside, -100 ignored, the mean over real targets or the sum over `num_items_in_batch`), computed by
    `LMHeadCrossEntropy` with fp32 temporaries of about `block` elements (32 MB by default)."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden_states.device)
    logits, loss = LMHeadCrossEntropy.apply(hidden_states.reshape(-1, hidden_states.shape[-1]), weight, targets, block)
    count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    if torch.is_tensor(count):
        count = count.to(loss.device)
    return logits.view(*hidden_states.shape[:-1], -1), loss / count


# ----------------------------------------------------------------------------------------------- models


class TinyLMPreTrainedModel(PreTrainedModel):
    config: TinyLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TinyLMDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": TinyLMDecoderLayer, "attentions": TinyLMAttention}

    def __init__(self, config: TinyLMConfig, *inputs, **kwargs):
        config.validate_architecture()  # the fields may have been edited since the config was built
        super().__init__(config, *inputs, **kwargs)

    # Serving engines' attention backends (vLLM's, SGLang's) set their implementation in the config before building
    # the model and take only q, k, v and the scaling: ALiBi's `position_bias` and the `sliding_window` kwarg are
    # dropped, and the model would silently run without positions or with full attention. Flash cannot add a bias
    # either. These hooks run whenever an implementation is chosen: at construction and in `set_attn_implementation`.
    def _check_and_adjust_attn_implementation(self, attn_implementation, is_init_check=False, **kwargs) -> str:
        implementation = super()._check_and_adjust_attn_implementation(attn_implementation, is_init_check, **kwargs)
        self._refuse_attention_that_changes_the_math(implementation)
        return implementation

    def get_correct_attn_implementation(self, requested_attention, is_init_check=False) -> str:
        implementation = super().get_correct_attn_implementation(requested_attention, is_init_check)
        self._refuse_attention_that_changes_the_math(implementation)
        return implementation

    def _refuse_attention_that_changes_the_math(self, implementation: str) -> None:
        adds_bias = implementation in ATTENTION_WITH_POSITION_BIAS
        if self.config.position_embedding_type == "alibi" and not adds_bias:
            raise ValueError(
                f"attn_implementation={implementation!r} cannot add ALiBi's attention bias (`position_bias`), so this "
                "ALiBi model would run without positions. Use 'sdpa' (the default), 'eager' or 'flex_attention'."
            )
        flash = is_flash_attention_requested(requested_attention_implementation=implementation)
        if self.config.sliding_window and not (adds_bias or flash):
            raise ValueError(
                f"attn_implementation={implementation!r} ignores the sliding window (sliding_window="
                f"{self.config.sliding_window}), so every token would attend to all earlier ones. Use 'sdpa' (the "
                "default), 'eager', 'flex_attention' or a flash attention kernel."
            )

    def save_pretrained(self, *args, save_original_format: bool = False, **kwargs):
        """Transformers' `save_pretrained`, except that by default it writes the weights as this model names them.
        With `save_original_format=True` Transformers would revert the registered loading conversion (the split of
        a legacy fused `qkv_proj`) and write the old layout, even for a freshly built model."""
        return super().save_pretrained(*args, save_original_format=save_original_format, **kwargs)

    def _resolve_parallel_plans(self, distributed_config):
        """Transformers' plan resolution for `from_pretrained(distributed_config=...)`, refusing head counts that a
        tensor-parallel size cannot split into whole heads per rank (Transformers would cut a head in two)."""
        tp_plan, *other_plans = super()._resolve_parallel_plans(distributed_config)
        heads = {"q_proj": self.config.num_attention_heads, "k_proj": self.config.num_key_value_heads,
                 "v_proj": self.config.num_key_value_heads}
        tp_size = distributed_config.tp_size
        for name, style in tp_plan.items():
            projection = name.rpartition(".")[2]
            if style == "colwise" and projection in heads and heads[projection] % tp_size:
                whole_attention = {rule: "replicate" for rule in self.tp_plan
                                   if rule.rpartition(".")[2] in ("q_proj", "k_proj", "v_proj", "o_proj")}
                raise ValueError(
                    f"Tensor parallelism splits attention by heads, so tp_size={tp_size} must divide "
                    f"num_key_value_heads={self.config.num_key_value_heads} (and num_attention_heads="
                    f"{self.config.num_attention_heads}). Use a tp_size that divides num_key_value_heads, or keep "
                    f"attention whole on every rank (the MLP stays split): `DistributedConfig(tp_size={tp_size}, "
                    f"tp_plan={whole_attention})`."
                )
        return (tp_plan, *other_plans)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation: N(0, initializer_range) everywhere, and the projections that write into the
        residual stream scaled by 1/sqrt(2 * layers) ("a modified initialization which accounts for the
        accumulation on the residual path with model depth", Radford et al., 2019). Position tables, RoPE
        frequencies and ALiBi slopes are rebuilt here too: `from_pretrained` creates the model on the meta device,
        so non-persistent buffers must be recomputed, not loaded."""
        # Transformers calls this per module, and skips (for custom code) modules without parameters of their own,
        # so each rule below targets the module that owns the tensor.
        super()._init_weights(module)  # Linear/Embedding normal, norms ones/zeros, rotary inv_freq
        if isinstance(module, TinyLMResidualProjection):
            residual_std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=residual_std)
        elif isinstance(module, TinyLMSinusoidalPositionalEmbedding):
            init.copy_(module.weight, module.compute_table(module.max_positions, module.hidden_size))
        elif isinstance(module, TinyLMALiBi):
            init.copy_(module.slopes, module.compute_slopes(module.num_heads))


class TinyLMModel(TinyLMPreTrainedModel):
    """The decoder stack: token (and position) embeddings, the blocks, a final norm; hidden states out."""

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        positions = config.position_embedding_type
        # No `padding_idx`: GPT-2 pads with its end-of-text token, whose embedding must still be learned.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = None  # absolute positions, added to the token embeddings
        self.rotary_emb = None  # rotary positions, applied to q and k in every layer
        self.alibi = None  # ALiBi, an additive attention bias
        if positions == "learned":
            self.embed_positions = TinyLMLearnedPositionalEmbedding(config.max_position_embeddings, config.hidden_size)
        elif positions == "sinusoidal":
            self.embed_positions = TinyLMSinusoidalPositionalEmbedding(
                config.max_position_embeddings, config.hidden_size
            )
        elif positions == "rotary":
            self.rotary_emb = TinyLMRotaryEmbedding(config)
        elif positions == "alibi":
            self.alibi = TinyLMALiBi(config.num_attention_heads)
        else:  # the config refuses unknown schemes; one set after construction must not become ALiBi
            raise ValueError(f"Unknown position_embedding_type {positions!r}.")
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(TinyLMDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # Post-norm blocks already end in a norm; pre-norm stacks need one before the head.
        self.norm = build_norm(config) if config.norm_position == "pre" else nn.Identity()
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        # A static cache counts on the device (a tensor); a paged cache (continuous batching) brings its own
        # positions and masks, and has no one length.
        past = 0 if cache is None or isinstance(cache, PagedAttentionCache) else cache.get_seq_length()
        self._check_inputs(input_ids, inputs_embeds, attention_mask, position_ids, past)
        # A one-token step after cached tokens is a decode step: it reads nothing back from the device (which would
        # stall a GPU once per token). Token ids are checked where they enter, in the prompt or any longer input; a
        # decode step's token is the model's own choice.
        decoding = (input_ids if input_ids is not None else inputs_embeds).shape[1] == 1 and not (
            isinstance(past, int) and past == 0
        )
        if inputs_embeds is None:
            if not decoding:
                self._check_token_ids(input_ids)
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            position_ids = self._default_position_ids(attention_mask, past, length, inputs_embeds.device)

        if (decoding and isinstance(past, int) and (attention_mask is None or attention_mask.dim() == 2)
                and not self.config.sliding_window and self.config._attn_implementation == "sdpa"):
            # One query over every cached key: causality holds already, so SDPA's mask is the padding mask, (B, 1,
            # 1, S), or none (`generate` drops a mask without padding): an op or none instead of Transformers'
            # general mask builder (dozens, at every token).
            attention_mask_4d = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        else:
            mask_function = create_sliding_window_causal_mask if self.config.sliding_window else create_causal_mask
            attention_mask_4d = mask_function(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=cache,
                position_ids=position_ids,
                # Skipping the mask for SDPA's `is_causal` first asks the device whether a row has padding.
                allow_is_causal_skip=not (decoding and attention_mask is not None),
            )

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.embed_positions is not None:
            # Under pipeline parallelism (Transformers', vLLM's, SGLang's) a stage's missing layers are identity
            # stand-ins and later stages get hidden states as `inputs_embeds`: the stage that runs the first layer
            # adds the positions, once.
            if not isinstance(self.layers[0], nn.Identity):
                # Generated positions stay below the count of cached and new tokens (a static cache: its length).
                bound = (past + length if isinstance(past, int) else cache.get_max_length()) if decoding else None
                _check_positions_fit(position_ids, self.config.max_position_embeddings,
                                     self.config.position_embedding_type, bound)
                hidden_states = hidden_states + self.embed_positions(position_ids).to(hidden_states.dtype)
        elif self.rotary_emb is not None:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
        else:
            kwargs["position_bias"] = self._alibi_bias(cache, past, position_ids, batch, length, hidden_states.dtype)
        hidden_states = self.embedding_dropout(hidden_states)

        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=attention_mask_4d,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache if use_cache else None)

    def _check_inputs(self, input_ids, inputs_embeds, attention_mask, position_ids, past) -> None:
        """Refuse malformed inputs here, naming the fix, instead of failing deep inside a layer. Shapes and dtypes
        only: nothing here waits for the device."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
                raise ValueError(
                    f"`input_ids` must be a (batch, sequence) tensor of integer token ids, got a {input_ids.dtype} "
                    f"tensor of shape {tuple(input_ids.shape)}. A single sequence needs a batch dimension: "
                    "`input_ids[None]`."
                )
            shape = tuple(input_ids.shape)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"`inputs_embeds` must have shape (batch, sequence, hidden_size={self.config.hidden_size}), got "
                    f"{tuple(inputs_embeds.shape)}."
                )
            if not inputs_embeds.is_floating_point():
                raise ValueError(f"`inputs_embeds` must be floating point, got {inputs_embeds.dtype}.")
            shape = tuple(inputs_embeds.shape[:2])
        if 0 in shape:
            raise ValueError(
                f"The input is empty (batch, sequence) = {shape}: give at least one token per row. To generate from "
                "nothing, start from the BOS token, e.g. `model.generate(torch.tensor([[bos_token_id]]))`."
            )
        batch, length = shape
        if attention_mask is not None and attention_mask.dim() == 2:
            # A static cache counts its length on the device: comparing it here would wait for the device.
            expected = past + length if isinstance(past, int) else None
            if attention_mask.shape[0] != batch or attention_mask.shape[1] < length or (
                expected is not None and attention_mask.shape[1] != expected
            ):
                raise ValueError(
                    f"`attention_mask` has shape {tuple(attention_mask.shape)}, but the input is (batch, sequence) = "
                    f"{shape}" + (f" after {past} cached tokens" if past else "")
                    + (f", so it must be ({batch}, {expected})" if expected is not None else "")
                    + ": one entry per cached and new token, 1 for a real token and 0 for padding."
                )
        elif attention_mask is not None and attention_mask.dim() != 4:
            raise ValueError(
                f"`attention_mask` must be (batch, sequence) or a 4-D (batch, heads, query, key) mask, got shape "
                f"{tuple(attention_mask.shape)}."
            )
        if position_ids is not None and (
            position_ids.dim() != 2 or position_ids.shape[1] != length or position_ids.shape[0] not in (1, batch)
        ):
            raise ValueError(
                f"`position_ids` must have shape ({batch}, {length}) or (1, {length}) for an input of (batch, "
                f"sequence) = {shape}, got {tuple(position_ids.shape)}."
            )

    def _check_token_ids(self, input_ids: torch.Tensor) -> None:
        if is_torchdynamo_compiling() or input_ids.numel() == 0:
            return
        low, high = (int(bound) for bound in torch.aminmax(input_ids))
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"Token id {bad} is outside this model's vocabulary [0, {self.config.vocab_size}). Use the "
                "tokenizer the model was trained with, or call `model.resize_token_embeddings(len(tokenizer))` "
                "after adding tokens."
            )

    @staticmethod
    def _default_position_ids(attention_mask, past_length, length, device) -> torch.Tensor:
        """Positions count real tokens only, so a left-padded row gets the positions it would have alone."""
        if attention_mask is not None and attention_mask.dim() == 2:
            position_ids = attention_mask.long().cumsum(-1) - 1
            return position_ids.clamp(min=0)[:, -length:]
        return (torch.arange(length, device=device) + past_length)[None]

    def _alibi_bias(self, cache, past, position_ids, batch, length, dtype) -> torch.Tensor:
        self._refuse_attention_that_changes_the_math(self.config._attn_implementation)  # the config may be edited
        if isinstance(cache, PagedAttentionCache):
            raise ValueError(
                "Continuous batching (`generate_batch`, `transformers serve`) packs requests into one sequence, and "
                "TinyLM's ALiBi bias does not follow that packing. Use `generate()` for ALiBi models."
            )
        key_length, key_offset = cache.get_mask_sizes(length, 0) if cache is not None else (length, 0)
        if isinstance(past, int) and past == 0 and key_length == length:
            # Nothing cached, and the keys are the queries, at the given positions (which may repeat, e.g. several
            # continuations of one prefix under a custom 4-D mask).
            return self.alibi(position_ids, position_ids, batch, dtype)
        # Key positions follow the cache: after cached tokens, or a static cache's fixed length (a sliding-window
        # cache keeps only the last keys). ALiBi only needs distances, and left padding shifts queries and keys
        # alike. (A static cache counts on the device.)
        device = self.alibi.slopes.device
        query_positions = (torch.arange(length, device=device) + past)[None]
        key_positions = (torch.arange(key_length, device=device) + key_offset)[None]
        return self.alibi(query_positions, key_positions, batch, dtype)


class TinyLMForCausalLM(TinyLMPreTrainedModel, GenerationMixin):
    """TinyLM with a language-modelling head, tied to the token embeddings when `tie_word_embeddings`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # Under tensor parallelism the head is split by vocabulary as the (tied) embeddings are, its logits gathered.
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: TinyLMConfig):
        super().__init__(config)
        self.model = TinyLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""`labels` are the input ids themselves (shifted inside the loss; -100 is ignored). `logits_to_keep`
        computes logits for the last N positions only (0 keeps all), which is what `generate` asks for. A loss that
        will be differentiated goes through `chunked_causal_lm_loss`: the same value and gradients, without the
        full-size fp32 copies of the logits that dominate training memory at large vocabularies."""
        if labels is not None:
            inputs = input_ids if input_ids is not None else inputs_embeds
            if inputs is not None and labels.shape != inputs.shape[:2]:
                raise ValueError(
                    f"`labels` must have the (batch, sequence) shape of the input, {tuple(inputs.shape[:2])}, got "
                    f"{tuple(labels.shape)}: they are the input ids themselves, shifted inside the loss."
                )
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states, loss = outputs.last_hidden_state, None
        keep_all = isinstance(logits_to_keep, int) and logits_to_keep == 0
        if labels is not None and keep_all and self._trains_through_chunked_loss(hidden_states):
            logits, loss = chunked_causal_lm_loss(
                hidden_states, self.lm_head.weight, labels, kwargs.get("num_items_in_batch"), kwargs.get("shift_labels")
            )
        else:
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _trains_through_chunked_loss(self, hidden_states: torch.Tensor) -> bool:
        """Whether the loss will be differentiated and `chunked_causal_lm_loss` computes exactly what the head and
        `self.loss_function` would: a plain bias-free `nn.Linear` head (not one wrapped by an adapter, a quantizer
        or an offloading hook) and the default loss. Under `torch.compile` the compiler plans the memory itself."""
        head = self.lm_head
        return (
            torch.is_grad_enabled()
            and (hidden_states.requires_grad or head.weight.requires_grad)
            and not is_torchdynamo_compiling()
            and type(head) is nn.Linear
            and head.bias is None
            and "forward" not in vars(head)
            and not (head._forward_hooks or head._forward_pre_hooks)
            and self.loss_function is ForCausalLMLoss
        )


# ----------------------------------------------------------------------------------------------- task heads
# Forward, pooling and losses are Transformers' own (`Generic*`, as Llama uses). Each `__init__` builds `TinyLMModel`
# directly instead of through `AutoModel.from_config`: under `trust_remote_code` the downloaded config class is not
# registered with `AutoModel`, which would then refuse (or prompt) to run the custom code. The attribute names
# (`model`, `score`, `qa_outputs`) are the generic ones, so a causal-LM folder loads with its body kept and only the
# head newly initialised.


class TinyLMForSequenceClassification(GenericForSequenceClassification, TinyLMPreTrainedModel):
    """TinyLM with a linear head on the last non-pad token of each row (left or right padding, found through
    `pad_token_id`); the loss follows `config.problem_type` (regression, single- or multi-label)."""

    def __init__(self, config: TinyLMConfig):
        TinyLMPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = TinyLMModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()


class TinyLMForTokenClassification(GenericForTokenClassification, TinyLMPreTrainedModel):
    """TinyLM with a linear head on every token (after `config.classifier_dropout`, 0.1 when unset)."""

    def __init__(self, config: TinyLMConfig):
        TinyLMPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = TinyLMModel(config)
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=True)
        self.post_init()


class TinyLMForQuestionAnswering(GenericForQuestionAnswering, TinyLMPreTrainedModel):
    """TinyLM with extractive question-answering span logits (start and end) on every token."""

    def __init__(self, config: TinyLMConfig):
        TinyLMPreTrainedModel.__init__(self, config)
        self.model = TinyLMModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()


# ----------------------------------------------------------------------------------------------- earlier checkpoints


class SplitFusedQKV(Split):
    """Transformers' `Split` on dim 0, refusing a tensor-parallel load: that reads each rank's rows of the fused
    tensor as if it were `q_proj`, so the rank would get no whole q, k and v to cut."""

    def convert(self, input_dict, source_patterns, target_patterns, full_layer_name, model, **kwargs):
        if (getattr(model, "_tp_size", None) or 1) > 1:
            raise ValueError(
                "This folder stores the fused `self_attn.qkv_proj` of earlier TinyLM versions, which tensor "
                "parallelism cannot split on load. Load it once in one process and save it again (`save_pretrained` "
                "writes q_proj, k_proj and v_proj), then load that folder with tensor parallelism."
            )
        return super().convert(input_dict, source_patterns, target_patterns, full_layer_name, model, **kwargs)


# Folders saved before q, k and v had a projection each store one fused `self_attn.qkv_proj` (rows [q; k; v]):
# loading cuts it into the three, sized like the model's projections. Registered at import, so `trust_remote_code`
# users get it too (and again when the module is imported twice); `save_pretrained` writes the new layout.
register_checkpoint_conversion_mapping(
    TinyLMConfig.model_type,
    [
        WeightConverter(
            source_patterns="self_attn.qkv_proj",
            target_patterns=["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            operations=[SplitFusedQKV(dim=0)],
        )
    ],
    overwrite=True,
)


# Saved models carry this file and the config's, so a Hub user loads them with `trust_remote_code=True`.
TinyLMModel.register_for_auto_class("AutoModel")
TinyLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
TinyLMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
TinyLMForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
TinyLMForQuestionAnswering.register_for_auto_class("AutoModelForQuestionAnswering")

__all__ = [
    "TinyLMPreTrainedModel",
    "TinyLMModel",
    "TinyLMForCausalLM",
    "TinyLMForSequenceClassification",
    "TinyLMForTokenClassification",
    "TinyLMForQuestionAnswering",
]
