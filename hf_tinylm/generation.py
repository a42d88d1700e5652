"""`tinylm generate`: continue a prompt through `pipeline("text-generation")`, streaming tokens as they come.

The decoding settings start from the model's `generation_config.json`; the command's flags override them. The
prompt length is checked against the model's context before anything is generated.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from transformers import CompileConfig, GenerationConfig, TextStreamer, pipeline, set_seed

from .flags import non_negative_int, option, positive_float, positive_int, probability
from .model_folder import check_tinylm_checkpoint, read_tinylm_config
from .terminal import OutputOptions

DEFAULT_MAX_NEW_TOKENS = 50


@dataclass(kw_only=True)
class GenerateOptions(OutputOptions):
    """How to decode; unset options keep the model's generation config."""

    greedy: bool = option(False, exclusive_group="mode", help="greedy decoding")
    sample: bool = option(False, exclusive_group="mode", help="sampling (implied by --temperature/--top-k/--top-p)")
    temperature: float | None = option(None, type=positive_float,
                                       help="sampling temperature (> 0; use --greedy for 0)")
    top_k: int | None = option(None, type=non_negative_int, help="sample from the K most likely tokens (0: all)")
    top_p: float | None = option(None, type=probability, help="nucleus sampling: likeliest tokens up to this mass")
    num_beams: int | None = option(None, type=positive_int, help="beam search with N beams (output is not streamed)")
    repetition_penalty: float | None = option(None, type=positive_float, help="> 1 discourages repeats, 1 disables")
    max_new_tokens: int | None = option(None, type=positive_int,
                                        help=f"default: the generation config's, else {DEFAULT_MAX_NEW_TOKENS}")
    seed: int | None = option(None, type=int, help="seed for sampling, for reproducible output")
    stream: bool = option(True, flags=("--no-stream",), help="print the text once it is complete")
    compile: bool = option(False, help="decode with a static cache and a compiled forward (torch.compile, inductor): "
                                       "faster per token once compiled, which takes tens of seconds on CPU; pays "
                                       "on long outputs (see the README's Performance section)")


@dataclass(kw_only=True)
class GenerateSettings(GenerateOptions):
    """`tinylm generate`: the decoding options, and what to continue with which model."""

    model: str = option(positional=True, metavar="MODEL", help="TinyLM model folder")
    prompt: list[str] = option(positional=True, nargs="+", metavar="PROMPT",
                               help="the prompt (several words are joined by spaces)")


def generation_kwargs(options: GenerateOptions, max_new_tokens: int) -> dict:
    """The keyword arguments for the pipeline call: only what the flags set, on top of the generation config."""
    kwargs: dict = {"max_new_tokens": max_new_tokens}
    sampling_knobs = {"temperature": options.temperature, "top_k": options.top_k, "top_p": options.top_p}
    if options.greedy:
        if any(v is not None for v in sampling_knobs.values()):
            raise ValueError("--greedy cannot be combined with --temperature, --top-k or --top-p.")
        kwargs["do_sample"] = False
    elif options.sample or any(v is not None for v in sampling_knobs.values()):
        kwargs["do_sample"] = True
    elif options.num_beams:
        kwargs["do_sample"] = False
    kwargs.update({k: v for k, v in sampling_knobs.items() if v is not None})
    if options.num_beams:
        kwargs["num_beams"] = options.num_beams
    if options.repetition_penalty is not None:
        kwargs["repetition_penalty"] = options.repetition_penalty
    if options.compile:
        compile_config = CompileConfig(fullgraph=True)
        # `generate` compiles on CUDA only, unless told otherwise by this switch of Transformers' (which its tests use).
        compile_config._compile_all_devices = True
        kwargs.update(cache_implementation="static", compile_config=compile_config)
    return kwargs


def check_prompt_fits(prompt_tokens: int, max_new_tokens: int, config) -> None:
    """Refuse a prompt that, with `max_new_tokens` more, would not fit in learned or sinusoidal positions."""
    if prompt_tokens == 0:
        raise ValueError("The prompt is empty (it encodes to no tokens).")
    context = config.context_limit
    if context is None:  # relative positions: no hard limit
        return
    if prompt_tokens >= context:
        raise ValueError(f"The prompt is {prompt_tokens} tokens, which fills this model's context of {context} "
                         "tokens on its own; shorten the prompt.")
    if prompt_tokens + max_new_tokens > context:
        raise ValueError(
            f"The prompt is {prompt_tokens} tokens; with {max_new_tokens} new tokens that makes "
            f"{prompt_tokens + max_new_tokens}, more than this model's context of {context} tokens. Shorten the "
            f"prompt or lower --max-new-tokens to at most {context - prompt_tokens}."
        )


def generate(model_dir: str | Path, prompt: str, options: GenerateOptions, out: TextIO | None = None) -> str:
    """Generate from `prompt` with the TinyLM in `model_dir`, writing the text to `out` (default stdout); return
    the full text exactly as `pipeline` returns it."""
    out = out or sys.stdout
    config = read_tinylm_config(model_dir)
    folder = Path(model_dir)
    check_tinylm_checkpoint(folder, config)  # unreadable or mismatched weights: one clear line, not a traceback
    if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
        raise ValueError(f"{folder} has no tokenizer (tokenizer.json / tokenizer_config.json); generation needs one.")

    generator = pipeline("text-generation", model=str(folder))
    generation_config: GenerationConfig = generator.model.generation_config
    max_new_tokens = options.max_new_tokens or generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    prompt_tokens = len(generator.tokenizer(prompt, verbose=False)["input_ids"])
    check_prompt_fits(prompt_tokens, max_new_tokens, config)
    kwargs = generation_kwargs(options, max_new_tokens)

    streaming = options.stream and not (kwargs.get("num_beams") or generation_config.num_beams or 1) > 1
    if streaming:
        out.write(prompt)
        out.flush()
        kwargs["streamer"] = _WriterStreamer(generator.tokenizer, out)
    if options.seed is not None:
        set_seed(options.seed)
    text = generator(prompt, return_full_text=True, **kwargs)[0]["generated_text"]
    if not streaming:
        out.write(text)
    out.write("\n")
    out.flush()
    return text


class _WriterStreamer(TextStreamer):
    """`TextStreamer` (new text only, special tokens skipped) writing to `out` instead of printing."""

    def __init__(self, tokenizer, out: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.out.write(text)
        self.out.flush()
