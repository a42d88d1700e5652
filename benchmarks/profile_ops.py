"""Where the time goes: TinyLM and its Transformers reference on the same weights, one task, under torch.profiler.

    python benchmarks/profile_ops.py --pair tiny --task decode-static --dtype bf16          # the benchmark's shape
    python benchmarks/profile_ops.py --pair gpt2 --task prefill --dtype bf16 --shape 1 1024

Prints the operators with the most self CPU time in either model, per call of the task (after untimed warm-up calls,
which include compilation): how often each runs and its self time, for both side by side. These are the profiles
behind what the README and the issue notes say limits each of the benchmark's goals.
"""

import argparse
import re
import sys

import torch
from run import DTYPES, FULL, PAIRS, QUICK, QUICK_PAIRS, build_pair, runner, tasks

PROFILED_TASKS = ["train", "train-ckpt", "train-compiled", "prefill", "decode", "decode-static"]


def operator_profile(call, calls: int) -> dict[str, tuple[float, float]]:
    """operator -> (calls, self CPU ms), each per call of `call`; a compiled graph is named by its kind, not its hash,
    so that the two models' graphs share a row."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(calls):
            call()
    out = {}
    for event in profiler.key_averages():
        name = re.sub(r"CompiledFxGraph \w+", "CompiledFxGraph", event.key)
        count, ms = out.get(name, (0, 0))
        out[name] = (count + event.count / calls, ms + event.self_cpu_time_total / 1e3 / calls)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", default="gpt2", choices=list(PAIRS))
    parser.add_argument("--task", default="decode", choices=PROFILED_TASKS)
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--shape", type=int, nargs="+",
                        help="batch x length (decode: batch, prompt, new tokens); default: the benchmark's first")
    parser.add_argument("--calls", type=int, default=2, help="profiled calls of the task (default: 2)")
    parser.add_argument("--rows", type=int, default=20, help="operators shown (default: 20)")
    parser.add_argument("--quick", action="store_true", help="the benchmark's tiny shapes: checks that it runs")
    args = parser.parse_args(argv)

    settings = dict(QUICK if args.quick else FULL, tasks=[args.task])
    config = (QUICK_PAIRS if args.quick else PAIRS)[args.pair][0]()
    shape = tuple(args.shape) if args.shape else tasks(config, settings)[0][1]
    dtype = DTYPES[args.dtype]
    training = args.task.startswith("train")  # fp32 weights under autocast, as the benchmark trains
    models = dict(zip(("TinyLM", "reference"), build_pair(args.pair, args.quick), strict=True))
    profiles = {}
    for name, model in models.items():
        call = runner(model if training else model.to(dtype=dtype), args.task, shape, dtype, "cpu", None)
        torch._dynamo.reset()  # each model compiles afresh, as in its own process
        call(), call()
        profiles[name] = operator_profile(call, args.calls)

    tinylm, reference = profiles["TinyLM"], profiles["reference"]
    busiest = sorted(set(tinylm) | set(reference),
                     key=lambda op: -max(tinylm.get(op, (0, 0))[1], reference.get(op, (0, 0))[1]))
    print(f"{args.pair} {args.dtype} {args.task} {'x'.join(map(str, shape))}: per call of the task, self CPU time "
          f"(ms) and calls of each operator; reference = {type(models['reference']).__name__}")
    width = max(len(op) for op in busiest[:args.rows])
    print(f"{'operator':{width}}  {'TinyLM ms':>10} {'calls':>8}  {'reference ms':>12} {'calls':>8}")
    for op in busiest[:args.rows]:
        (t_calls, t_ms), (r_calls, r_ms) = tinylm.get(op, (0, 0)), reference.get(op, (0, 0))
        print(f"{op:{width}}  {t_ms:10.2f} {t_calls:8.0f}  {r_ms:12.2f} {r_calls:8.0f}")
    totals = [sum(ms for _, ms in profile.values()) for profile in (tinylm, reference)]
    print(f"{'all operators':{width}}  {totals[0]:10.2f} {'':8}  {totals[1]:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
