"""One rank of `tests/test_tensor_parallel.py`, launched by `torchrun --nproc_per_node 2` on CPU (gloo).

For each model folder given, it loads the folder with Transformers' tensor parallelism (with the rules of
`<folder>/tp_plan.json` overriding the model's plan, if there is one), runs the folder's saved
inputs (a forward with and without autograd, and greedy generation) and writes what it measured to
`<folder>/tp_rank<rank>.json`: the largest differences from the single-process reference the test saved in
`<folder>/reference.pt`, and the local and full shapes of the parameters. The test makes the assertions.
"""

import json
import sys
import warnings
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from transformers import DistributedConfig

from hf_tinylm import TinyLMForCausalLM

warnings.simplefilter("error", FutureWarning)  # as the project's pytest settings: no deprecated API

PARAMETERS = {  # short name -> parameter name
    "q_proj": "model.layers.0.self_attn.q_proj.weight",
    "k_proj": "model.layers.0.self_attn.k_proj.weight",
    "v_proj": "model.layers.0.self_attn.v_proj.weight",
    "o_proj": "model.layers.0.self_attn.o_proj.weight",
    "up_proj": "model.layers.0.mlp.up_proj.weight",
    "down_proj": "model.layers.0.mlp.down_proj.weight",
    "embed_tokens": "model.embed_tokens.weight",
    "lm_head": "lm_head.weight",
}


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def measure(folder: Path) -> dict:
    reference = torch.load(folder / "reference.pt")
    plan_file = folder / "tp_plan.json"  # rules overriding the model's plan, if the test gives any
    tp_plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
    try:
        distributed = DistributedConfig(tp_size=2, tp_plan=tp_plan)
        model = TinyLMForCausalLM.from_pretrained(folder, distributed_config=distributed).eval()
    except (ValueError, RuntimeError) as error:  # a conversion error is raised after the load report is logged
        return {"error": str(error)}
    parameters = dict(model.named_parameters(remove_duplicate=False))
    shapes = {}
    for short, name in PARAMETERS.items():
        parameter = parameters[name]
        local = parameter.to_local() if isinstance(parameter, DTensor) else parameter
        shapes[short] = {"local": list(local.shape), "full": list(parameter.shape)}

    inputs = {"input_ids": reference["input_ids"], "attention_mask": reference["attention_mask"]}
    with torch.no_grad():
        logits = model(**inputs).logits  # the inference fast path: local tensors
    logits_autograd = model(**inputs).logits  # the DTensor path that training takes
    generated = model.generate(**inputs, max_new_tokens=reference["sequences"].shape[1] - inputs["input_ids"].shape[1],
                               do_sample=False, output_logits=True, return_dict_in_generate=True)
    return {
        "shapes": shapes,
        "logits": largest_difference(logits, reference["logits"]),
        "logits_autograd": largest_difference(logits_autograd.detach(), reference["logits"]),
        "steps": [largest_difference(a, b) for a, b in zip(generated.logits, reference["step_logits"], strict=True)],
        "same_tokens": torch.equal(generated.sequences, reference["sequences"]),
        "head_tied": model.lm_head.weight is model.model.embed_tokens.weight,
    }


def main() -> None:
    for folder in map(Path, sys.argv[1:]):
        result = measure(folder)
        rank = torch.distributed.get_rank()  # initialised by the first tensor-parallel load
        (folder / f"tp_rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
