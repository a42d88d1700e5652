"""`tinylm generate`: continue a prompt through `pipeline("text-generation")`, streaming tokens as they come.

The decoding settings start from the model's `generation_config.json`; the command's flags override them. The
prompt length is checked against the model's context before anything is generated.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from transformers import GenerationConfig, TextStreamer, pipeline, set_seed

from .conversion.sources import check_tinylm_checkpoint
from .info import read_tinylm_config

DEFAULT_MAX_NEW_TOKENS = 50


@dataclass
class GenerateOptions:
    greedy: bool = False
    sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    stream: bool = True


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
    return kwargs


def check_prompt_fits(prompt_tokens: int, max_new_tokens: int, config) -> None:
    """Refuse a prompt that, with `max_new_tokens` more, would not fit in learned or sinusoidal positions."""
    if prompt_tokens == 0:
        raise ValueError("The prompt is empty (it encodes to no tokens).")
    context = config.max_position_embeddings
    if config.position_embedding_type not in ("learned", "sinusoidal"):
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
