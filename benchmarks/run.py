"""TinyLM against Transformers' own GPT-2 and Llama on the same weights, and against what the machine allows.

    python benchmarks/run.py                     # the full run -> benchmarks/results/<device>.json and .md
    python benchmarks/run.py --quick --out DIR   # tiny shapes, 2 rounds: proves the benchmark runs, measures nothing
    python benchmarks/run.py --device cuda       # the same on a GPU

Each pair (TinyLM, reference) holds the same weights and lives in one process. Every task times the two in
interleaved rounds (A B, then B A, ...), so that machine noise hits both alike, and reports the medians, the spread
(min-max over rounds) and the per-round throughput ratio TinyLM / reference (> 1: TinyLM is faster). The machine's
matmul rate and weight-streaming bandwidth turn each throughput into a fraction of its roofline. Peak memory is
measured in a fresh process per model and task that loads only that model (peak RSS reset before the task), so
no task hides behind another's.
Run it on a quiet machine: other load moves the absolute numbers, and widens the spreads of the ratios.
"""

import argparse
import copy
import datetime
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    CompileConfig,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from hf_tinylm import TinyLMConfig, TinyLMForCausalLM

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SIDES = ("tinylm", "reference")
TASKS = ["train", "train-ckpt", "train-compiled", "prefill", "decode", "decode-static", "load", "train-command"]
# Real text for `train-command`, where a checkout has the shared data beside it; else generated words.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare"

# name -> (TinyLM config, reference family). Full: the real shapes; quick: the same families, tiny.
PAIRS = {
    "gpt2": (lambda: TinyLMConfig.from_preset("gpt2"), "gpt2"),
    "llama": (lambda: TinyLMConfig.from_preset("llama-base", vocab_size=32000), "llama"),
    "tiny": (lambda: TinyLMConfig.from_preset("tiny"), "gpt2"),
}
QUICK_PAIRS = {
    "gpt2": (lambda: TinyLMConfig.from_preset("gpt2", vocab_size=512, hidden_size=64, num_attention_heads=4,
                                              num_hidden_layers=2, intermediate_size=256,
                                              max_position_embeddings=128, bos_token_id=0, eos_token_id=0), "gpt2"),
    "llama": (lambda: TinyLMConfig.from_preset("llama-tiny", vocab_size=512, num_hidden_layers=2), "llama"),
    "tiny": (lambda: TinyLMConfig.from_preset("tiny", num_hidden_layers=2), "gpt2"),
}
# train_memory: a second, larger training shape for peak memory only, where the (tokens x vocabulary) logits weigh more.
FULL = dict(prefill=[(4, 512), (1, 1024)], train=(4, 256), train_memory=(8, 512), decode_batches=[1, 8],
            prompt=32, new_tokens=128, rounds=dict(prefill=10, train=8, decode=5, load=8, command=3), matmul_size=2048,
            stream_shape=(4096, 8192), train_command=dict(preset="small", steps=60, batch=8, block=128),
            memory_probes=3)
QUICK = dict(prefill=[(2, 32)], train=(2, 32), train_memory=None, decode_batches=[1, 2], prompt=8, new_tokens=8,
             rounds=dict(prefill=2, train=2, decode=2, load=2, command=2), matmul_size=256, stream_shape=(512, 1024),
             train_command=dict(preset="tiny", steps=2, batch=2, block=16), memory_probes=1)

# The targets, as TinyLM / reference throughput (load: time, memory: peak, both "TinyLM no worse").
DECODE_GOALS = {("gpt2", "fp32"): 1.1, ("gpt2", "bf16"): 1.3, ("tiny", "fp32"): 1.5, ("tiny", "bf16"): 1.5}


def goal(pair: str, task: str, dtype: str) -> float:
    if task.startswith("decode"):
        return DECODE_GOALS.get((pair, dtype), 1.0)
    return 1.0 if task == "load" else 1.05


# ----------------------------------------------------------------------------------------------- the models


def build_pair(pair: str, quick: bool) -> tuple[TinyLMForCausalLM, transformers.PreTrainedModel]:
    """TinyLM and its Transformers reference holding the same (seeded random) weights, fp32, eval mode; refuses to
    go on unless both compute the same logits."""
    make_config, family = (QUICK_PAIRS if quick else PAIRS)[pair]
    config = make_config()
    torch.manual_seed(0)
    reference = build_reference(config, family)
    mapping = gpt2_weights_for_tinylm if family == "gpt2" else llama_weights_for_tinylm
    tiny = TinyLMForCausalLM(config)
    missing, unexpected = tiny.load_state_dict(mapping(reference.state_dict(), config.num_hidden_layers), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # a tied head is one tensor
    tiny.eval(), reference.eval()
    with torch.no_grad():
        ids = torch.randint(0, config.vocab_size, (2, 16))
        difference = (tiny(ids).logits - reference(ids).logits).abs().max().item()
    assert difference < 1e-4, f"{pair}: TinyLM and the reference differ by {difference} in fp32 logits"
    for model in (tiny, reference):  # run every decode to its full length: no end-of-text stop
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
    return tiny, reference


def build_reference(config: TinyLMConfig, family: str) -> transformers.PreTrainedModel:
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.max_position_embeddings, n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers, n_head=config.num_attention_heads, n_inner=config.intermediate_size,
            activation_function=config.hidden_act, layer_norm_epsilon=config.norm_eps,
            resid_pdrop=config.residual_dropout, embd_pdrop=config.embedding_dropout,
            attn_pdrop=config.attention_dropout, tie_word_embeddings=config.tie_word_embeddings,
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        ))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.norm_eps, rope_parameters=dict(config.rope_parameters),
        tie_word_embeddings=config.tie_word_embeddings,
    ))


def gpt2_weights_for_tinylm(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """GPT-2's names -> TinyLM's. GPT-2's `Conv1D` weights are (in, out), TinyLM's `nn.Linear` ones (out, in); GPT-2's
    fused `c_attn` holds q, k and v side by side (its last dim), split into TinyLM's three projections; the head is
    tied to the token embeddings in both."""
    out = {"model.embed_tokens.weight": state["transformer.wte.weight"],
           "model.embed_positions.weight": state["transformer.wpe.weight"],
           "model.norm.weight": state["transformer.ln_f.weight"], "model.norm.bias": state["transformer.ln_f.bias"]}
    for i in range(layers):
        source, target = f"transformer.h.{i}.", f"model.layers.{i}."
        for gpt2, tinylm, transpose in (("ln_1", "attn_norm", False), ("ln_2", "mlp_norm", False),
                                        ("attn.c_proj", "self_attn.o_proj", True),
                                        ("mlp.c_fc", "mlp.up_proj", True), ("mlp.c_proj", "mlp.down_proj", True)):
            weight = state[f"{source}{gpt2}.weight"]
            out[f"{target}{tinylm}.weight"] = weight.t().contiguous() if transpose else weight
            out[f"{target}{tinylm}.bias"] = state[f"{source}{gpt2}.bias"]
        # c_attn: weight (in, 3 * hidden) and bias (3 * hidden), q | k | v along the last dim
        weights = state[f"{source}attn.c_attn.weight"].chunk(3, dim=1)
        biases = state[f"{source}attn.c_attn.bias"].chunk(3)
        for x, weight, bias in zip("qkv", weights, biases, strict=True):
            out[f"{target}self_attn.{x}_proj.weight"] = weight.t().contiguous()
            out[f"{target}self_attn.{x}_proj.bias"] = bias.contiguous()
    return out


def llama_weights_for_tinylm(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Llama's names -> TinyLM's: the same projections, only the norms renamed."""
    out = {name: state[name] for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "attn_norm.weight"] = state[p + "input_layernorm.weight"]
        out[p + "mlp_norm.weight"] = state[p + "post_attention_layernorm.weight"]
        for x in ("q", "k", "v", "o"):
            out[p + f"self_attn.{x}_proj.weight"] = state[p + f"self_attn.{x}_proj.weight"]
        for x in ("gate", "up", "down"):
            out[p + f"mlp.{x}_proj.weight"] = state[p + f"mlp.{x}_proj.weight"]
    return out


# ----------------------------------------------------------------------------------------------- the tasks


def tasks(config: TinyLMConfig, settings: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(task, shape) in run order: training first (fp32 weights, bf16 by autocast), then inference, then loading."""
    fit = config.max_position_embeddings
    out = [(task, settings["train"]) for task in ("train", "train-ckpt", "train-compiled")]
    out += [("prefill", (batch, min(length, fit))) for batch, length in settings["prefill"]]
    for cache in ("decode", "decode-static"):
        out += [(cache, (batch, settings["prompt"], settings["new_tokens"])) for batch in settings["decode_batches"]]
    return [(task, shape) for task, shape in out + [("load", ())] if task in settings["tasks"]]


def runner(model, task: str, shape: tuple, dtype: torch.dtype, device: str, folder: Path | None) -> Callable:
    """One call of `task` on `model`, as a function of no arguments (inputs, optimizer and caches made here)."""
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(1)
    if task.startswith("train"):
        ids = torch.randint(0, vocab, shape, generator=generator).to(device)
        model.train()
        if task == "train-ckpt":
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        forward = torch.compile(model) if task == "train-compiled" else model  # inductor, as `Trainer` compiles
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                loss = forward(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step
    if task == "prefill":
        ids = torch.randint(0, vocab, shape, generator=generator).to(device)
        return torch.no_grad()(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1))
    if task.startswith("decode"):
        batch, prompt, new_tokens = shape
        ids = torch.randint(1, vocab, (batch, prompt), generator=generator).to(device)
        settings = dict(max_new_tokens=new_tokens, do_sample=False)
        if task == "decode-static":
            # On CPU `generate` compiles only when told to; "reduce-overhead" (CUDA graphs) is for GPUs.
            compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead" if device == "cuda" else "default")
            compile_config._compile_all_devices = True
            settings.update(cache_implementation="static", compile_config=compile_config)
        generation_config = GenerationConfig(**settings)

        def generate():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=generation_config)
            assert out.shape == (batch, prompt + new_tokens), out.shape
            return out

        return generate
    model_class = type(model)
    return lambda: model_class.from_pretrained(folder, dtype=dtype, device_map=device)


def work(task: str, shape: tuple) -> int:
    """Tokens processed per call (load: 1 call), the unit of every throughput."""
    if task == "load":
        return 1
    if task.startswith("decode"):
        return shape[0] * shape[2]
    return shape[0] * shape[1]


def bound(config: TinyLMConfig, task: str, shape: tuple, dtype: str, machine: dict) -> float | None:
    """The roofline throughput (tokens/s) of `task`: matmul-bound for prefill and training, the slower of
    weight streaming and matmul for each decode step."""
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    body = layers * (d * (q + 2 * kv) + q * d + (3 if config.mlp_type == "glu" else 2) * d * config.intermediate_size)
    flops_rate = machine[dtype]["matmul_gflops"] * 1e9
    if task == "load":
        return None
    if task.startswith("decode"):
        batch, prompt, new_tokens = shape
        context = prompt + new_tokens / 2  # the mean cached length over the decode
        element = torch.finfo(DTYPES[dtype]).bits // 8
        step_bytes = element * (body + d * vocab + 2 * layers * kv * context * batch)
        step_flops = 2 * batch * (body + d * vocab) + 4 * batch * layers * context * q
        step = max(step_bytes / (machine[dtype]["stream_gbs"] * 1e9), step_flops / flops_rate)
        return batch / step
    batch, length = shape
    # Causal attention: q·k and weights·v, each over half the T x T square on average.
    forward = 2 * batch * length * body + 2 * batch * layers * length * length * q
    if task == "prefill":
        return batch * length / ((forward + 2 * batch * d * vocab) / flops_rate)
    return batch * length / (3 * (forward + 2 * batch * length * d * vocab) / flops_rate)


# ----------------------------------------------------------------------------------------------- measuring


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def interleaved(calls: dict[str, Callable], rounds: int, sync: Callable, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function over `rounds` rounds, after `warmup` calls each (their seconds under
    "warmup:<name>": compilation shows there); the order alternates every round (A B, B A, ...), so that a slow
    stretch of the machine hits both."""
    times = {}
    for name, call in calls.items():
        start = time.perf_counter()
        for _ in range(warmup):
            call()
        sync()
        times[f"warmup:{name}"] = [time.perf_counter() - start]
    times.update({name: [] for name in calls})
    names = list(calls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync()
            start = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def summary(values: list[float]) -> dict:
    return dict(median=statistics.median(values), min=min(values), max=max(values), n=len(values))


def measure_machine(device: str, settings: dict) -> dict:
    """Matmul GFLOP/s (square matmul) and weight-streaming GB/s (a matrix-vector product over a weight too big for
    cache, in both weight layouts; the faster counts) for each dtype."""
    sync, out = synchronizer(device), {}
    n, (rows, cols) = settings["matmul_size"], settings["stream_shape"]
    for name, dtype in DTYPES.items():
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        matmul = statistics.median(interleaved({"mm": lambda: a @ b}, 5, sync, warmup=2)["mm"])
        weight = torch.randn(rows, cols, device=device, dtype=dtype)  # (in, out)
        x_in, x_out = torch.randn(1, rows, device=device, dtype=dtype), torch.randn(1, cols, device=device, dtype=dtype)
        layouts = {"in_out": lambda: x_in @ weight, "out_in": lambda: torch.nn.functional.linear(x_out, weight)}
        stream = interleaved(layouts, 10, sync, warmup=2)
        seconds = {layout: statistics.median(stream[layout]) for layout in layouts}
        gbs = {layout: weight.numel() * weight.element_size() / t / 1e9 for layout, t in seconds.items()}
        out[name] = dict(matmul_gflops=2 * n**3 / matmul / 1e9, stream_gbs=max(gbs.values()),
                         stream_gbs_in_out=gbs["in_out"], stream_gbs_out_in=gbs["out_in"])
    return out


def time_pair(pair: str, dtype: str, device: str, settings: dict, machine: dict, quick: bool) -> list[dict]:
    sync, torch_dtype, rows = synchronizer(device), DTYPES[dtype], []
    models, phase = None, None
    with tempfile.TemporaryDirectory() as tmp:
        for task, shape in tasks((QUICK_PAIRS if quick else PAIRS)[pair][0](), settings):
            if phase != task.startswith("train"):
                # Fresh weights after training; training runs in fp32 (bf16 by autocast), inference in the dtype.
                phase = task.startswith("train")
                models = [m.to(device) if phase else m.to(device, torch_dtype) for m in build_pair(pair, quick)]
            if task == "load":
                for name, model in zip(SIDES, models, strict=True):
                    model.save_pretrained(Path(tmp) / name)
            calls = {
                name: runner(model, task, shape, torch_dtype, device, Path(tmp) / name)
                for name, model in zip(SIDES, models, strict=True)
            }
            kind = task.split("-")[0]
            started = time.perf_counter()
            compiled = task in ("decode-static", "train-compiled")
            if compiled:  # a fresh compiler cache, as in a fresh process: the forwards of both models share
                torch._dynamo.reset()  # Transformers' wrapper, whose entries would otherwise hit the recompile limit
            times = interleaved(calls, settings["rounds"][kind], sync, warmup=2 if compiled else 1)
            if task.startswith("train"):
                for model in models:
                    model.activation_checkpointing_disable()
            units = work(task, shape)
            ratios = [r / t for t, r in zip(times["tinylm"], times["reference"])]
            row = dict(pair=pair, dtype=dtype, task=task, shape=list(shape), goal=goal(pair, task, dtype),
                       ratio=summary(ratios))
            for name in calls:
                row[name] = summary([units / t for t in times[name]] if task != "load" else times[name])
                row[name]["warmup_seconds"] = times[f"warmup:{name}"][0]
            roof = bound(models[0].config, task, shape, dtype, machine)
            if roof is not None:
                row["roofline"] = roof
                row["roofline_fraction"] = {name: row[name]["median"] / roof for name in calls}
            row["met"] = row["ratio"]["median"] >= row["goal"]
            rows.append(row)
            ratio = row["ratio"]
            print(f"{pair:5} {dtype} {task:14} {str(shape):14} ratio {ratio['median']:.2f} ({ratio['min']:.2f}-"
                  f"{ratio['max']:.2f}) [{time.perf_counter() - started:.0f} s]", flush=True)
    return rows


def time_train_command(settings: dict, corpus: Path | None) -> dict:
    """`tinylm train` end to end (data, tokenizer, the Trainer with TinyLM's callbacks, held-out evaluation before and
    after, the saved folder with its card and curves) against the same work as a plain `Trainer` script: the same
    blocks, model, arguments, evaluations and saved weights. Ratio > 1: `tinylm train` takes less time."""
    import datasets
    from transformers import PrinterCallback, Trainer, TrainingArguments, default_data_collator

    from hf_tinylm.training import data as data_lib
    from hf_tinylm.training.settings import TrainSettings
    from hf_tinylm.training.tokenizer import byte_level_tokenizer
    from hf_tinylm.training.train import train

    datasets.disable_progress_bars()  # as `tinylm train --quiet` does
    job = settings["train_command"]
    source = str(corpus) if corpus else "generated words"
    with tempfile.TemporaryDirectory() as tmp:
        if corpus is None:  # the same work for both sides, whatever the words say
            corpus = Path(tmp) / "corpus.txt"
            words = [f"word{i % 97}" for i in range(job["steps"] * job["batch"] * job["block"])]
            corpus.write_text("\n".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12)))
        command = TrainSettings(data=[str(corpus)], preset=job["preset"], tokenizer="byte", block_size=job["block"],
                                batch_size=job["batch"], max_steps=job["steps"], learning_rate=5e-4, save_steps=0,
                                progress=False, quiet=True, output=Path(tmp) / "command", overwrite=True)

        def tinylm_train():
            train(command)

        def plain_trainer():
            tokenizer = byte_level_tokenizer()
            raw = data_lib.load_text_dataset(data_lib.resolve_data_files([str(corpus)], command.glob))
            blocks = data_lib.tokenize_and_pack(raw, tokenizer, job["block"])
            train_blocks, held_out = data_lib.split_blocks(blocks, command.validation_split)
            transformers.set_seed(command.seed)
            special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
            config = TinyLMConfig.from_preset(job["preset"], vocab_size=len(tokenizer), **special)
            args = TrainingArguments(
                output_dir=str(Path(tmp) / "plain-checkpoints"), per_device_train_batch_size=job["batch"],
                learning_rate=command.learning_rate, max_steps=job["steps"], logging_steps=command.logging_steps,
                save_strategy="no",
                seed=command.seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True, report_to=[],
            )
            trainer = Trainer(model=TinyLMForCausalLM(config), args=args, train_dataset=train_blocks,
                              eval_dataset=held_out, data_collator=default_data_collator, processing_class=tokenizer)
            trainer.remove_callback(PrinterCallback)  # as `tinylm train --quiet`: no log lines
            trainer.evaluate()
            trainer.train()
            trainer.evaluate()
            trainer.save_model(str(Path(tmp) / "plain"))

        times = interleaved({"tinylm": tinylm_train, "reference": plain_trainer}, settings["rounds"]["command"],
                            lambda: None, warmup=1)
    units = job["steps"] * job["batch"] * job["block"]
    ratios = [r / t for t, r in zip(times["tinylm"], times["reference"])]
    row = dict(pair=job["preset"], dtype="fp32", task="train-command", shape=[job["batch"], job["block"], job["steps"]],
               goal=1.0, ratio=summary(ratios), corpus=source)
    for name in SIDES:
        row[name] = summary([units / t for t in times[name]])
        row[name]["warmup_seconds"] = times[f"warmup:{name}"][0]
    row["met"] = row["ratio"]["median"] >= row["goal"]
    ratio = row["ratio"]
    print(f"{row['pair']:5} fp32 train-command  ratio {ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})",
          flush=True)
    return row


def peak_memory(pair: str, dtype: str, device: str, quick: bool, settings: dict) -> list[dict]:
    """Peak memory of each side and task: the median of `memory_probes` probes, each its own process (see `probe`);
    a task's peak RSS varies from process to process by up to a fifth (allocator and library scratch buffers)."""
    rows = []
    config = (QUICK_PAIRS if quick else PAIRS)[pair][0]()
    # Each task once, at its largest shape (training also at `train_memory`); compiled runs measure the compiler
    # as much as the model.
    largest = {}
    for task, shape in tasks(config, settings):
        if task not in ("train-compiled", "decode-static") and math.prod(shape) >= math.prod(largest.get(task, ())):
            largest[task] = shape
    chosen = list(largest.items())
    if "train" in largest and settings["train_memory"]:
        chosen.insert(1, ("train", settings["train_memory"]))
    with tempfile.TemporaryDirectory() as folders:  # each side saved once, loaded alone by its probes
        for side, model in zip(SIDES, build_pair(pair, quick), strict=True):
            model.save_pretrained(Path(folders) / side)
        for task, shape in chosen[:1] if quick else chosen:  # quick: training only, to prove the probe works
            runs = {side: [] for side in SIDES}
            for _ in range(settings["memory_probes"]):  # sides alternating, as the speed rounds do
                for side in SIDES:
                    request = json.dumps(dict(folder=str(Path(folders) / side), dtype=dtype, device=device,
                                              task=task, shape=shape))
                    done = subprocess.run([sys.executable, __file__, "--probe", request], capture_output=True,
                                          text=True, check=True)
                    runs[side].append(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])
            peaks = {side: dict(peak_mb=statistics.median(mb), probes=mb) for side, mb in runs.items()}
            ratio = peaks["tinylm"]["peak_mb"] / peaks["reference"]["peak_mb"]
            rows.append(dict(pair=pair, dtype=dtype, task=task, shape=list(shape), tinylm=peaks["tinylm"],
                             reference=peaks["reference"], ratio=ratio, met=ratio <= 1))
            print(f"{pair:5} {dtype} memory {task:13} ratio {ratio:.2f}", flush=True)
    return rows


def probe(request: dict) -> dict:
    """In a fresh process: load one side's saved folder and nothing else (a heap holding no freed models, whose reuse
    would make the peak vary from run to run), reset the peak counters, run the task twice, report the peak (MB).
    CPU: the process's peak RSS (Linux `VmHWM`, reset through /proc/self/clear_refs); CUDA: allocated memory."""
    dtype, device, task = DTYPES[request["dtype"]], request["device"], request["task"]
    folder = Path(request["folder"])
    if task == "load":  # the loaded copy is what counts

        def call():
            return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device)
    else:  # training: fp32 weights (bf16 by autocast); inference: in the dtype
        weights = torch.float32 if task.startswith("train") else dtype
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=weights, device_map=device)
        call = runner(model, task, tuple(request["shape"]), dtype, device, folder)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")
    call(), call()
    if device == "cuda":
        return dict(peak_mb=torch.cuda.max_memory_allocated() / 2**20)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return dict(peak_mb=int(status["VmHWM"].split()[0]) / 1024)


# ----------------------------------------------------------------------------------------------- reporting


def describe_machine(device: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return dict(date=datetime.date.today().isoformat(), platform=platform.platform(), cpu=cpu,
                torch_threads=torch.get_num_threads(), device=device,
                gpu=torch.cuda.get_device_name() if device == "cuda" else None, python=platform.python_version(),
                torch=torch.__version__, transformers=transformers.__version__)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# TinyLM vs Transformers: {m['date']}, {m['cpu']}"
        + (f", {m['gpu']}" if m["gpu"] else f", {m['torch_threads']} threads"),
        "",
        f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}"
        + (" — **quick mode: tiny shapes, not a measurement**" if report["quick"] else "")
        + ("" if report["complete"] else " — **partial: the run was interrupted, these are the parts it finished**"),
        "",
        "| dtype | matmul GFLOP/s | weight streaming GB/s ((in, out) / (out, in) layout) |",
        "| --- | --- | --- |",
    ]
    for dtype, roof in report["roofline"].items():
        lines.append(f"| {dtype} | {roof['matmul_gflops']:.0f} | {roof['stream_gbs_in_out']:.1f} / "
                     f"{roof['stream_gbs_out_in']:.1f} |")
    lines += [
        "",
        "Throughput medians in tokens/s (load: seconds); ratio = TinyLM / reference throughput per interleaved "
        "round, median (min-max); roofline = the median as a fraction of the machine's bound; warm-up = the "
        "untimed first calls (compilation for decode-static and train-compiled). train-command: `tinylm train` end "
        "to end against a plain `Trainer` script doing the same work (reference), tokens/s of the whole run.",
        "",
        "| pair | dtype | task | shape | TinyLM | reference | ratio | goal | roofline TinyLM / ref | warm-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["speed"]:
        fraction = r.get("roofline_fraction")
        roof = f"{fraction['tinylm']:.0%} / {fraction['reference']:.0%}" if fraction else ""
        lines.append(
            f"| {r['pair']} | {r['dtype']} | {r['task']} | {'x'.join(map(str, r['shape']))} | "
            f"{r['tinylm']['median']:.4g} | {r['reference']['median']:.4g} | {r['ratio']['median']:.2f} "
            f"({r['ratio']['min']:.2f}-{r['ratio']['max']:.2f}) | ≥ {r['goal']} {'✓' if r['met'] else '✗'} | "
            f"{roof} | {r['tinylm']['warmup_seconds']:.1f} / {r['reference']['warmup_seconds']:.1f} |"
        )
    lines += [
        "",
        "Peak memory (MB; CPU: peak RSS of a fresh process that loads one model and runs the task twice; the median "
        f"of {report['settings']['memory_probes']} such processes), lower is better.",
        "",
        "| pair | dtype | task | shape | TinyLM | reference | ratio | ≤ 1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["memory"]:
        lines.append(f"| {r['pair']} | {r['dtype']} | {r['task']} | {'x'.join(map(str, r['shape']))} | "
                     f"{r['tinylm']['peak_mb']:.0f} | {r['reference']['peak_mb']:.0f} | {r['ratio']:.2f} | "
                     f"{'✓' if r['met'] else '✗'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 rounds: checks that it runs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one peak-memory measurement (JSON request)
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(json.loads(args.probe))))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    settings = dict(QUICK if args.quick else FULL, tasks=args.tasks)
    machine = measure_machine(args.device, settings)
    report = dict(machine=describe_machine(args.device), quick=args.quick, settings=copy.deepcopy(settings),
                  roofline=machine, speed=[], memory=[], complete=False)
    args.out.mkdir(parents=True, exist_ok=True)
    for pair in args.pairs:  # the results so far are written after each part: an interrupted run keeps them
        for dtype in args.dtypes:
            report["speed"] += time_pair(pair, dtype, args.device, settings, machine, args.quick)
            report["memory"] += peak_memory(pair, dtype, args.device, args.quick, settings)
            write_report(report, args.out, args.device)
    if "train-command" in args.tasks:
        report["speed"].append(time_train_command(settings, CORPUS if CORPUS.is_dir() and not args.quick else None))
    report["complete"] = True
    write_report(report, args.out, args.device)
    print(f"wrote {args.out / args.device}.json and .md")
    return 0


def write_report(report: dict, out: Path, device: str) -> None:
    (out / f"{device}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{device}.md").write_text(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
