"""Configuration of the TinyLM family: one dataclass, plain string fields for each variant, named presets.

This file is copied next to the weights by `save_pretrained` (for `trust_remote_code`), so it may import only
`transformers` and the standard library.
"""

import dataclasses
import difflib
from numbers import Real
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
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, RopeParameters  # noqa: E402

# What the code around the model needs to know of each position scheme: whether positions are absolute (embedded
# from a table of `max_position_embeddings` rows, so that is a hard limit on the context) and learned (a weight).
POSITION_SCHEMES = {
    "learned": dict(absolute=True, learned=True),
    "sinusoidal": dict(absolute=True, learned=False),
    "rotary": dict(absolute=False, learned=False),  # configured by `rope_parameters`
    "alibi": dict(absolute=False, learned=False),  # an additive attention bias
}
POSITION_EMBEDDING_TYPES = tuple(POSITION_SCHEMES)
NORM_TYPES = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
MLP_TYPES = ("mlp", "glu")  # "mlp": down(act(up(x))); "glu": down(act(gate(x)) * up(x)), SwiGLU with act "silu"
ROPE_TYPES = ("default", *ROPE_INIT_FUNCTIONS)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# field -> (test, what it must be); see `TinyLMConfig._validate_field_types`.
_FIELD_KINDS = {
    **{name: (_is_positive_int, "a positive integer") for name in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "max_position_embeddings", "sliding_window")},
    **{name: (lambda v: _is_number(v) and v > 0, "a positive number") for name in (
        "norm_eps", "initializer_range", "attention_scale")},
    **{name: (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)") for name in (
        "embedding_dropout", "attention_dropout", "residual_dropout")},
    **{name: (lambda v: isinstance(v, bool), "True or False") for name in (
        "attention_bias", "mlp_bias", "tie_word_embeddings", "scale_attn_by_inverse_layer_idx", "use_cache")},
}
# None means: derived from the other fields (sizes), or not used (sliding window, attention scale).
_OPTIONAL_FIELDS = ("num_key_value_heads", "head_dim", "intermediate_size", "sliding_window", "attention_scale")
# The sizes left as None are derived from the others, so: field -> its value from the other fields.
_DERIVED_SIZES = {
    "num_key_value_heads": lambda config: config.num_attention_heads,  # multi-head attention
    "head_dim": lambda config: config.hidden_size // config.num_attention_heads,
    "intermediate_size": lambda config: 4 * config.hidden_size,
}
# The numeric RoPE parameters and what each must be (Transformers checks which keys a type needs, but only warns
# about their values).
_ROPE_NUMBERS = {
    "rope_theta": (lambda v: v > 0, "a positive number"),
    "factor": (lambda v: v >= 1, "a number >= 1"),
    "original_max_position_embeddings": (lambda v: v > 0 and v == int(v), "a positive integer"),
    "attention_factor": (lambda v: v > 0, "a positive number"),
    "beta_fast": (lambda v: v > 0, "a positive number"),
    "beta_slow": (lambda v: v > 0, "a positive number"),
    "low_freq_factor": (lambda v: v > 0, "a positive number"),
    "high_freq_factor": (lambda v: v > 0, "a positive number"),
    "partial_rotary_factor": (lambda v: v == 1, "1 (TinyLM rotates whole heads)"),
}

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

# name -> overrides of the class defaults (which are the "tiny" preset). GPT-2 sizes are OpenAI's exact shapes. A size
# left out is derived (`_DERIVED_SIZES`: an MLP 4 x hidden_size wide, multi-head attention).
PRESETS: dict[str, dict[str, Any]] = {
    # GPT-2-style architecture at small sizes
    "tiny": dict(vocab_size=256, hidden_size=128, num_attention_heads=4, num_hidden_layers=4),
    "small": dict(vocab_size=1000, hidden_size=256, num_attention_heads=8, num_hidden_layers=6),
    "medium": dict(vocab_size=5000, hidden_size=512, num_attention_heads=8, num_hidden_layers=12,
                   max_position_embeddings=1024),
    "base": dict(vocab_size=10000, hidden_size=768, num_attention_heads=12, num_hidden_layers=12,
                 max_position_embeddings=1024),
    # OpenAI GPT-2
    "gpt2": dict(_GPT2, hidden_size=768, num_attention_heads=12, num_hidden_layers=12),  # 124M
    "gpt2-medium": dict(_GPT2, hidden_size=1024, num_attention_heads=16, num_hidden_layers=24),  # 355M
    "gpt2-large": dict(_GPT2, hidden_size=1280, num_attention_heads=20, num_hidden_layers=36),  # 774M
    "gpt2-xl": dict(_GPT2, hidden_size=1600, num_attention_heads=25, num_hidden_layers=48),  # 1.56B
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
        self._validate_field_types()  # before the derived defaults below compute with them
        for name, derive in _DERIVED_SIZES.items():
            if getattr(self, name) is None:
                setattr(self, name, derive(self))
        # The model classes are saved with the weights; they are all listed here because `save_pretrained` only
        # records the class of the saved object (and the config) in `auto_map`.
        if getattr(self, "auto_map", None) is None:
            self.auto_map = {
                "AutoModel": "modeling_tinylm.TinyLMModel",
                "AutoModelForCausalLM": "modeling_tinylm.TinyLMForCausalLM",
                "AutoModelForSequenceClassification": "modeling_tinylm.TinyLMForSequenceClassification",
                "AutoModelForTokenClassification": "modeling_tinylm.TinyLMForTokenClassification",
                "AutoModelForQuestionAnswering": "modeling_tinylm.TinyLMForQuestionAnswering",
            }
        super().__post_init__(**kwargs)  # fills in `rope_parameters` (honouring a legacy top-level `rope_theta`)
        if self.position_embedding_type != "rotary" and self.rope_parameters == self._default_rope_parameters():
            # Transformers gives every config these defaults (earlier TinyLM configs saved them too), and treats a
            # config that has `rope_parameters` as a RoPE model: a non-rotary one must not have them.
            self.rope_parameters = None
        self.validate_architecture()

    @property
    def base_model_tp_plan(self) -> dict[str, str]:
        """Tensor parallelism (`from_pretrained(..., distributed_config=DistributedConfig(tp_size=N))`) as Llama
        does it: q, k and v split by heads (`colwise`; each rank attends with its own heads), the MLP by its hidden
        units, and the output projections `rowwise` (summed across ranks). Transformers adds `embed_tokens:
        embedding_rowwise` (split by vocabulary) and `TinyLMForCausalLM` its head. A property, so a plain MLP has
        no `gate_proj` rule (an unused rule is warned about); Transformers does not save it in config.json."""
        plan = {f"layers.*.self_attn.{name}": "colwise" for name in ("q_proj", "k_proj", "v_proj")}
        plan["layers.*.self_attn.o_proj"] = "rowwise"
        if self.mlp_type == "glu":
            plan["layers.*.mlp.gate_proj"] = "colwise"
        plan["layers.*.mlp.up_proj"] = "colwise"
        plan["layers.*.mlp.down_proj"] = "rowwise"
        return plan

    def _default_rope_parameters(self) -> dict:
        return {"rope_type": "default", "rope_theta": self.default_theta}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TinyLMConfig":
        """The named preset (see `PRESETS`), with any field overridden, e.g. `from_preset("gpt2", num_hidden_layers=6)`;
        see `with_overrides`."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}.")
        _refuse_unknown_fields(overrides, f"override preset {name!r}")
        return cls(**PRESETS[name]).with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> "TinyLMConfig":
        """A new config: this one with `overrides` applied to the fields it is made from. A size this one derived
        (head_dim, intermediate_size, num_key_value_heads; see `_DERIVED_SIZES`) is derived again from the new values
        unless overridden itself, and RoPE parameters are dropped when an override chooses other positions. So a
        saved config and the preset it came from give the same model for the same overrides.

        An override that is not a config field is refused (the constructor would keep it as an unused attribute)."""
        _refuse_unknown_fields(overrides, "override a config")
        fields = self.to_dict()
        for name, derive in _DERIVED_SIZES.items():
            if fields.get(name) == derive(self):
                del fields[name]
        if overrides.get("position_embedding_type", "rotary") != "rotary" and "rope_parameters" not in overrides:
            fields.pop("rope_parameters", None)
        return type(self)(**{**fields, **overrides})

    @property
    def has_absolute_positions(self) -> bool:
        """Positions are embedded from a table of `max_position_embeddings` rows (learned or sinusoidal)."""
        return POSITION_SCHEMES[self.position_embedding_type]["absolute"]

    @property
    def has_learned_positions(self) -> bool:
        return POSITION_SCHEMES[self.position_embedding_type]["learned"]

    @property
    def context_limit(self) -> int | None:
        """The most tokens the model can take, prompt and generated text together: `max_position_embeddings` for
        absolute positions; None for relative ones (rotary, ALiBi), which run past it, if less well."""
        return self.max_position_embeddings if self.has_absolute_positions else None

    def validate_architecture(self) -> None:
        """Reject an inconsistent configuration, naming the field and what it may be."""
        _check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        _check_choice("mlp_type", self.mlp_type, MLP_TYPES)
        _check_choice("hidden_act", self.hidden_act, sorted(ACT2FN))
        self._validate_field_types()
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
        if self.position_embedding_type != "rotary" and self.rope_parameters:
            raise ValueError(
                f"`rope_parameters` configure rotary positions, but position_embedding_type="
                f"{self.position_embedding_type!r}. Remove `rope_parameters`, or set position_embedding_type='rotary'."
            )
        if self.position_embedding_type == "rotary":
            if self.head_dim % 2 != 0:
                raise ValueError(f"Rotary positions need an even `head_dim`, got {self.head_dim}.")
            self._validate_rope_parameters()

    def _validate_field_types(self) -> None:
        """Each numeric and boolean field holds a value of its kind and range (a string or float size would fail
        later, deep inside a layer)."""
        for name, (is_valid, what) in _FIELD_KINDS.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_FIELDS:
                continue
            if not is_valid(value):
                optional = " or None" if name in _OPTIONAL_FIELDS else ""
                raise ValueError(f"`{name}` must be {what}{optional}, got {value!r}.")
        if not isinstance(self.rope_parameters, dict | None):
            raise ValueError(f"`rope_parameters` must be a dict with a `rope_type`, got {self.rope_parameters!r}.")

    def _validate_rope_parameters(self) -> None:
        rope = self.rope_parameters
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"`rope_parameters['rope_type']` must be one of {', '.join(map(repr, ROPE_TYPES))}; "
                             f"got {rope_type!r}.")
        try:
            self.validate_rope()  # Transformers' check of the keys each RoPE type requires
        except KeyError as error:
            raise ValueError(f"`rope_parameters`: {error.args[0]}.") from None
        for key, (is_valid, what) in _ROPE_NUMBERS.items():
            value = rope.get(key)
            if value is None:
                continue
            if not _is_number(value) or not is_valid(value):
                raise ValueError(f"`rope_parameters['{key}']` must be {what}, got {value!r}.")
        if rope_type == "llama3" and rope["high_freq_factor"] <= rope["low_freq_factor"]:
            raise ValueError("`rope_parameters['high_freq_factor']` must be greater than `low_freq_factor`, got "
                             f"{rope['high_freq_factor']} and {rope['low_freq_factor']}.")
        if rope_type == "longrope":
            for key in ("short_factor", "long_factor"):
                value = rope[key]
                if not isinstance(value, list) or len(value) != self.head_dim // 2:
                    raise ValueError(f"`rope_parameters['{key}']` must be a list of head_dim / 2 = "
                                     f"{self.head_dim // 2} numbers, got {value!r}.")


# Saved configs carry this file, so a Hub user loads them with `trust_remote_code=True`.
TinyLMConfig.register_for_auto_class()


def _refuse_unknown_fields(overrides: dict[str, Any], purpose: str) -> None:
    known = {field.name for field in dataclasses.fields(TinyLMConfig)}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ValueError(f"`{key}` is not a TinyLMConfig field, so it cannot {purpose}.{hint}")


def _check_choice(field: str, value: Any, choices: tuple | list) -> None:
    if value not in choices:
        raise ValueError(f"`{field}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


__all__ = ["TinyLMConfig", "PRESETS"]
