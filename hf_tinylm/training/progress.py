"""What `tinylm train` shows while it runs: one progress bar for the training steps, and one readable line per log
entry (numbers with their units) instead of the Trainer's dictionaries of strings."""

import time

from tqdm.auto import tqdm
from transformers import TrainerCallback


class TrainingProgress(TrainerCallback):
    """Replaces the Trainer's `ProgressCallback` / `PrinterCallback`. Evaluation gets no nested bar (a bar inside a
    bar leaves escape codes in logs); lines are printed above the bar, or plainly without it, by the main process."""

    def __init__(self, bar: bool, log: bool):
        self.show_bar, self.show_log = bar, log
        self.bar = None
        self.last_time = self.last_tokens = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.show_bar:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", dynamic_ncols=True)
        self.last_time, self.last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_evaluate(self, args, state, control, **kwargs):
        self.last_time = time.perf_counter()  # tokens/s measures training, not evaluating or saving

    on_save = on_evaluate

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.show_log and logs):
            return
        line = self.describe(state, logs)
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def describe(self, state, logs: dict) -> str:
        """One log entry as a line: a training step's loss, an evaluation, or the end-of-training summary."""
        step = f"step {state.global_step:>{len(str(state.max_steps))}}/{state.max_steps}"
        if "eval_loss" in logs:
            return (f"{step}  held-out loss {logs['eval_loss']:.4f}  perplexity {logs['eval_perplexity']:.2f}  "
                    f"({logs.get('eval_runtime', 0.0):.1f} s)")
        if "train_loss" in logs:
            seconds = logs.get("train_runtime", 0.0)
            return (f"trained {state.global_step} steps in {seconds:.0f} s: mean training loss "
                    f"{logs['train_loss']:.4f}, {state.num_input_tokens_seen:,} tokens seen")
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_tokens = now, tokens
        parts = [step, f"loss {logs['loss']:.4f}" if "loss" in logs else None,
                 f"lr {logs['learning_rate']:.2e}" if "learning_rate" in logs else None,
                 f"grad norm {logs['grad_norm']:.3f}" if "grad_norm" in logs else None,
                 f"{tokens:,} tokens", f"{rate:,.0f} tokens/s", f"epoch {logs.get('epoch', state.epoch or 0):.2f}"]
        return "  ".join(part for part in parts if part)
