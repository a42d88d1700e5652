"""Configuration of the TinyLM family: one dataclass, plain string fields for each variant, named presets.

This file is copied next to the weights by `save_pretrained` (for `trust_remote_code`), so it may import only
`transformers` and the standard library.
"""

from typing import Any

from transformers.utils.versions import require_version

# The oldest Transformers this file and `modeling_tinylm.py` run on: 5.24 renamed the KV-cache argument and output
# field from `past_key_values` to `cache`. Checked first, so a Hub user on an older release is refused at load time
# instead of getting silently wrong generations.
MIN_TRANSFORMERS_VERSION = "5.24.0"
require_version(
    f"transformers>={MIN_TRANSFORMERS_VERSION}",
    f"TinyLM models need transformers>={MIN_TRANSFORMERS_VERSION}: upgrade with "
    f"`pip install -U \"transformers>={MIN_TRANSFORMERS_VERSION},<6\"`.",
)

from transformers import PreTrainedConfig  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402
from transformers.modeling_rope_utils import RopeParameters  # noqa: E402

POSITION_EMBEDDING_TYPES = ("learned", "sinusoidal", "rotary", "alibi")
NORM_TYPES = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
MLP_TYPES = ("mlp", "glu")  # "mlp": down(act(up(x))); "glu": down(act(gate(x)) * up(x)), SwiGLU with act "silu"

_GPT2 = dict(
    vocab_size=50257,
    max_position_embeddings=1024,
    position_embedding_type="learned",
    norm_type="layernorm",
    norm_eps=1e-5,
    norm_position="pre",
    mlp_type="mlp",
    hidden_act="gelu_new",
    attention_bias=True,
    mlp_bias=True,
    tie_word_embeddings=True,
    embedding_dropout=0.1,
    attention_dropout=0.1,
    residual_dropout=0.1,
    bos_token_id=50256,
    eos_token_id=50256,
)
_LLAMA = dict(
    position_embedding_type="rotary",
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    norm_type="rmsnorm",
    norm_eps=1e-6,
    norm_position="pre",
    mlp_type="glu",
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
    tie_word_embeddings=False,
)

# name -> overrides of the class defaults (which are the "tiny" preset). GPT-2 sizes are OpenAI's exact shapes.
PRESETS: dict[str, dict[str, Any]] = {
    # GPT-2-style architecture at small sizes
    "tiny": dict(vocab_size=256, hidden_size=128, num_attention_heads=4, num_hidden_layers=4, intermediate_size=512),
    "small": dict(vocab_size=1000, hidden_size=256, num_attention_heads=8, num_hidden_layers=6, intermediate_size=1024),
    "medium": dict(vocab_size=5000, hidden_size=512, num_attention_heads=8, num_hidden_layers=12,
                   intermediate_size=2048, max_position_embeddings=1024),
    "base": dict(vocab_size=10000, hidden_size=768, num_attention_heads=12, num_hidden_layers=12,
                 intermediate_size=3072, max_position_embeddings=1024),
    # OpenAI GPT-2
    "gpt2": dict(_GPT2, hidden_size=768, num_attention_heads=12, num_hidden_layers=12, intermediate_size=3072),  # 124M
    "gpt2-medium": dict(_GPT2, hidden_size=1024, num_attention_heads=16, num_hidden_layers=24,
                        intermediate_size=4096),  # 355M
    "gpt2-large": dict(_GPT2, hidden_size=1280, num_attention_heads=20, num_hidden_layers=36,
                       intermediate_size=5120),  # 774M
    "gpt2-xl": dict(_GPT2, hidden_size=1600, num_attention_heads=25, num_hidden_layers=48,
                    intermediate_size=6400),  # 1.56B
    # Llama-style: RoPE, RMSNorm, SwiGLU, grouped-query attention, untied head
    "llama-tiny": dict(_LLAMA, vocab_size=256, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=4, intermediate_size=352),
    "llama-small": dict(_LLAMA, vocab_size=1000, hidden_size=256, num_attention_heads=8, num_key_value_heads=2,
                        num_hidden_layers=6, intermediate_size=704),
    "llama-medium": dict(_LLAMA, vocab_size=5000, hidden_size=512, num_attention_heads=8, num_key_value_heads=2,
                         num_hidden_layers=12, intermediate_size=1408, max_position_embeddings=1024),
    "llama-base": dict(_LLAMA, vocab_size=10000, hidden_size=768, num_attention_heads=12, num_key_value_heads=4,
                       num_hidden_layers=12, intermediate_size=2048, max_position_embeddings=1024),
}


class TinyLMConfig(PreTrainedConfig):
    r"""Configuration of a TinyLM decoder-only language model.

    The defaults are the `tiny` preset: a GPT-2-style model (learned positions, pre-LayerNorm, GELU MLP, tied
    embeddings) small enough for tests. `TinyLMConfig.from_preset(name, **overrides)` gives the other presets.

    Each architectural variant is one plain field:
        position_embedding_type: "learned" | "sinusoidal" | "rotary" (configured by `rope_parameters`, so every
            RoPE scaling type of Transformers works) | "alibi" (an additive attention bias).
        norm_type / norm_position: "layernorm" | "rmsnorm", applied "pre" (before each sub-block, plus a final
            norm) or "post" (after each residual add, as in the original Transformer).
        mlp_type / hidden_act: "mlp" (GPT-2's `gelu_new`, exact `gelu`, ...) or "glu" (`silu` gives SwiGLU).
        num_key_value_heads: equal to `num_attention_heads` for multi-head, 1 for multi-query, in between for
            grouped-query attention. `sliding_window` limits how far back each token attends.
        attention_scale: the factor applied to q·k (default `head_dim ** -0.5`); with
            `scale_attn_by_inverse_layer_idx` it is further divided by `layer_idx + 1` (a GPT-2 option).

    Every field is checked once, at construction, by `validate_architecture`.
    """

    model_type = "tinylm"
    keys_to_ignore_at_inference = ["cache"]
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    # sizes
    vocab_size: int = 256
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None  # None: multi-head attention
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    intermediate_size: int | None = None  # None: 4 * hidden_size
    max_position_embeddings: int = 512
    # variants
    position_embedding_type: str = "learned"
    rope_parameters: RopeParameters | dict | None = None
    norm_type: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    mlp_type: str = "mlp"
    hidden_act: str = "gelu_new"
    attention_bias: bool = True
    mlp_bias: bool = True
    attention_scale: float | None = None
    scale_attn_by_inverse_layer_idx: bool = False
    sliding_window: int | None = None
    tie_word_embeddings: bool = True
    # regularisation and initialisation
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    initializer_range: float = 0.02
    # generation
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.position_embedding_type == "rotary" and not self.rope_parameters:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        # The model classes are saved with the weights; `AutoModel` is added here because `save_pretrained` only
        # records the class of the saved object (and the config) in `auto_map`.
        if getattr(self, "auto_map", None) is None:
            self.auto_map = {"AutoModel": "modeling_tinylm.TinyLMModel"}
        super().__post_init__(**kwargs)
        self.validate_architecture()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TinyLMConfig":
        """The named preset (see `PRESETS`), with any field overridden, e.g. `from_preset("gpt2", n_layer=...)`."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def validate_architecture(self) -> None:
        """Reject an inconsistent configuration, naming the field and what it may be."""
        _check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("mlp_type", self.mlp_type, MLP_TYPES)
        _check_choice("hidden_act", self.hidden_act, sorted(ACT2FN))
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be divisible by `num_key_value_heads` "
                f"({self.num_key_value_heads}): each key/value head serves a whole group of query heads "
                "(use 1 for multi-query, the number of heads for multi-head attention)."
            )
        if self.position_embedding_type == "rotary" and self.head_dim % 2 != 0:
            raise ValueError(f"Rotary positions need an even `head_dim`, got {self.head_dim}.")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"`sliding_window` must be a positive integer or None, got {self.sliding_window}.")
        if self.norm_eps <= 0:
            raise ValueError(f"`norm_eps` must be positive, got {self.norm_eps}.")
        if self.attention_scale is not None and self.attention_scale <= 0:
            raise ValueError(f"`attention_scale` must be positive or None (head_dim ** -0.5), got {self.attention_scale}.")
        for name in ("embedding_dropout", "attention_dropout", "residual_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1), got {getattr(self, name)}.")


# Saved configs carry this file, so a Hub user loads them with `trust_remote_code=True`.
TinyLMConfig.register_for_auto_class()


def _check_choice(field: str, value: Any, choices: tuple | list) -> None:
    if value not in choices:
        raise ValueError(f"`{field}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


__all__ = ["TinyLMConfig", "PRESETS"]
