"""`tinylm generate`: the same text as `pipeline` for the same settings and seed, streamed as it comes, and a
clear refusal of prompts that do not fit the context."""

import io

import pytest
from transformers import pipeline, set_seed

from cli_helpers import make_tiny_model
from hf_tinylm.cli import main
from hf_tinylm.generation import GenerateOptions, generate, generation_kwargs

PROMPT = "Hello world"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("gen") / "model")


def _pipeline_text(model_dir, seed=None, **kwargs):
    generator = pipeline("text-generation", model=str(model_dir))
    if seed is not None:
        set_seed(seed)
    return generator(PROMPT, **kwargs)[0]["generated_text"]


@pytest.mark.parametrize(
    ("flags", "kwargs"),
    [
        (["--seed", "7", "--temperature", "1.3", "--top-k", "40", "--top-p", "0.9"],
         dict(seed=7, do_sample=True, temperature=1.3, top_k=40, top_p=0.9)),
        (["--greedy"], dict(do_sample=False)),
        (["--num-beams", "3"], dict(num_beams=3, do_sample=False)),
    ],
    ids=["sampling", "greedy", "beam-search"],
)
def test_generate_prints_what_pipeline_returns(model_dir, capsys, flags, kwargs):
    code = main(["generate", str(model_dir), *PROMPT.split(), "--max-new-tokens", "20", *flags])
    assert code == 0
    expected = _pipeline_text(model_dir, max_new_tokens=20, **kwargs)
    assert capsys.readouterr().out == expected + "\n"
    assert len(expected) > len(PROMPT)


def test_compile_decodes_through_a_compiled_static_cache_with_the_text_of_the_default_path(model_dir, capsys):
    kwargs = generation_kwargs(GenerateOptions(compile=True), 5)
    assert kwargs["cache_implementation"] == "static" and kwargs["compile_config"].fullgraph
    code = main(["generate", str(model_dir), *PROMPT.split(), "--max-new-tokens", "20", "--greedy", "--compile"])
    assert code == 0
    assert capsys.readouterr().out == _pipeline_text(model_dir, max_new_tokens=20, do_sample=False) + "\n"


def test_sampling_with_the_same_seed_repeats_and_another_seed_differs(model_dir):
    texts = [generate(model_dir, PROMPT, GenerateOptions(seed=s, sample=True, max_new_tokens=30), io.StringIO())
             for s in (1, 1, 2)]
    assert texts[0] == texts[1] != texts[2]


def test_generate_streams_tokens_as_they_come(model_dir):
    """Each piece of text is written as soon as it is decoded, not once at the end."""

    class Recorder(io.StringIO):
        writes = 0

        def write(self, text):
            Recorder.writes += 1
            return super().write(text)

    out = Recorder()
    text = generate(model_dir, PROMPT, GenerateOptions(seed=0, greedy=True, max_new_tokens=30), out)
    assert out.getvalue() == text + "\n"
    assert Recorder.writes > 3


def test_prompt_longer_than_the_context_is_refused_before_generating(model_dir, capsys):
    code = main(["generate", str(model_dir), "x" * 60, "--max-new-tokens", "10"])
    err = capsys.readouterr().err
    assert code == 1
    assert "60 tokens" in err and "context of 64 tokens" in err and "at most 4" in err
    assert main(["generate", str(model_dir), "x" * 64]) == 1
    assert "fills this model's context" in capsys.readouterr().err


def test_flags_override_only_what_they_name():
    assert generation_kwargs(GenerateOptions(), 5) == {"max_new_tokens": 5}
    assert generation_kwargs(GenerateOptions(top_k=3), 5) == {"max_new_tokens": 5, "do_sample": True, "top_k": 3}
    with pytest.raises(ValueError, match="--greedy"):
        generation_kwargs(GenerateOptions(greedy=True, temperature=0.5), 5)
