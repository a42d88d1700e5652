"""`tinylm demo`: the main job end to end, offline, in a few minutes on a CPU.

Train a small TinyLM from scratch (with a BPE trained on the same text) on the Python standard library's own
sources, which every machine with Python has; save the Hub-ready folder; reload it in a fresh Python process that
does not import `hf_tinylm` (so the code files saved next to the weights are what runs, through
`trust_remote_code=True`); generate a sample through `pipeline`.
"""

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..flags import option, positive_int
from ..terminal import OutputOptions

# Measured on 2 CPU cores: about 2.5 minutes in all, reload and generation included (see the README).
DEMO_CONFIG = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                   max_position_embeddings=256)


@dataclass(kw_only=True)
class DemoSettings(OutputOptions):
    output: str = option("tinylm-demo", flags=("--output", "-o"), metavar="FOLDER", help="the model folder to write")
    text: list[str] | None = option(None, nargs="+", metavar="PATH",
                                    help="train on these files/folders instead of the standard library's *.py files")
    max_bytes: int = option(2_000_000, type=positive_int, help="read at most this much text")
    steps: int = option(400, type=positive_int, help="training steps")
    prompt: str = option("def", help="the prompt of the sample")
    max_new_tokens: int = option(60, type=positive_int, help="length of the sample")
    seed: int = option(0, type=int, help="seed of training and sampling")
    overwrite: bool = option(False, help="replace the output folder whatever it holds")
    vocab_size: int = 2048
    block_size: int = 128
    batch_size: int = 16
    learning_rate: float = 2e-3

# Runs in a fresh interpreter: only Transformers, so the model class comes from the folder's own code files.
RELOAD_SCRIPT = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline, set_seed
folder, prompt, max_new_tokens, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
set_seed(seed)
generator = pipeline("text-generation", model=model, tokenizer=tokenizer, trust_remote_code=True)
text = generator(prompt, max_new_tokens=max_new_tokens)[0]["generated_text"]
cls = type(model)
print()
print(json.dumps({"class": cls.__module__ + "." + cls.__name__, "sample": text,
                  "hf_tinylm_imported": "hf_tinylm" in sys.modules}))
"""


def stdlib_sources() -> list[Path]:
    """The standard library's top-level *.py files, sorted by name (the same on every machine with this Python)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.is_file())
    if not files:
        raise FileNotFoundError(f"No Python sources found in {stdlib}; point --text at some text.")
    return files


def take_bytes(files: list[Path], max_bytes: int) -> list[Path]:
    """Whole files, in order, skipping any that would take the total past `max_bytes` (the first file is always
    taken, so there is some text)."""
    chosen, total = [], 0
    for path in files:
        size = path.stat().st_size
        if chosen and total + size > max_bytes:
            continue
        chosen.append(path)
        total += size
    return chosen


def _may_replace(output: Path) -> bool:
    """An earlier demo's (or any TinyLM) model folder may be replaced without --overwrite; nothing else."""
    config = output / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "tinylm"
    except json.JSONDecodeError:
        return False


def run_demo(s: DemoSettings) -> dict:
    from .curves import CURVES_FILE
    from .data import resolve_data_files
    from .settings import DEFAULT_PATTERNS, TrainSettings
    from .train import train

    start = time.time()
    output = Path(s.output)
    overwrite = s.overwrite or not output.exists() or _may_replace(output)
    if not overwrite:
        raise FileExistsError(f"{output} exists and is not a TinyLM model folder; pass --overwrite to replace it.")
    if s.text:
        files = take_bytes(resolve_data_files(s.text, (*DEFAULT_PATTERNS, "*.py")), s.max_bytes)
        description = ", ".join(f"`{p}`" for p in s.text)
    else:
        files = take_bytes(stdlib_sources(), s.max_bytes)
        python = sys.version.split()[0]
        description = f"the first {len(files)} top-level modules of the Python {python} standard library"
    n_bytes = sum(p.stat().st_size for p in files)
    if not s.quiet:
        print(f"tinylm demo: training a {DEMO_CONFIG['num_hidden_layers']}-layer TinyLM from scratch on {len(files)} "
              f"files ({n_bytes / 1e6:.2f} MB), {s.steps} steps", flush=True)

    with tempfile.TemporaryDirectory(prefix="tinylm-demo-run-") as run_dir:
        report = train(TrainSettings(
            output=output, data=[str(p) for p in files], data_description=description,
            preset="tiny", config_overrides=DEMO_CONFIG, tokenizer="bpe", vocab_size=s.vocab_size,
            block_size=s.block_size, batch_size=s.batch_size, learning_rate=s.learning_rate,
            lr_scheduler="cosine", warmup_steps=min(50, s.steps // 10), max_steps=s.steps, weight_decay=0.1,
            validation_split=0.02, logging_steps=max(1, s.steps // 20), eval_steps=max(1, s.steps // 4),
            save_steps=0, checkpoint_dir=Path(run_dir), seed=s.seed, overwrite=overwrite, progress=s.progress,
            quiet=s.quiet,
        ))
    trained = time.time()
    print(f"\nheld-out perplexity: {report.perplexity_before:.1f} before training -> "
          f"{report.perplexity_after:.1f} after {report.steps} steps "
          f"({report.tokens_seen:,} tokens, {trained - start:.0f} s)", flush=True)
    if not s.quiet:
        print(f"saved the Hub-ready folder {output} (loss curves: {output / CURVES_FILE}); reloading it in a fresh "
              "process...", flush=True)

    sample = reload_and_generate(output, s.prompt, s.max_new_tokens, s.seed)
    print(f"loaded {sample['class']} with trust_remote_code=True")
    print(f"sample (prompt {s.prompt!r}, seed {s.seed}):\n{'-' * 60}\n{sample['sample']}\n{'-' * 60}")
    print(f"done in {time.time() - start:.0f} s")
    return {"report": report, "sample": sample["sample"], "class": sample["class"], "seconds": time.time() - start}


def reload_and_generate(folder: Path, prompt: str, max_new_tokens: int, seed: int) -> dict:
    """Load `folder` in a new interpreter with `trust_remote_code=True` and generate through `pipeline`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(folder.resolve()), prompt, str(max_new_tokens), str(seed)],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(),
    )
    if done.returncode != 0:
        raise ValueError(f"Reloading {folder} in a fresh process failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
