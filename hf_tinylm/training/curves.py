"""Pictures of training, drawn from the Trainer's log: one run's loss and held-out perplexity, and several runs'
held-out loss on one chart. Figures are drawn on matplotlib's Agg canvas, so no display (and no pyplot state) is
involved."""

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter

CURVES_FILE = "training_curves.png"


def training_points(log_history: list[dict]) -> list[tuple[int, float]]:
    """(tokens seen, training loss) of every logged training step."""
    return [(entry["num_input_tokens_seen"], entry["loss"]) for entry in log_history if "loss" in entry]


def held_out_points(log_history: list[dict]) -> list[tuple[int, float]]:
    """(tokens seen, held-out loss) of every evaluation, in order, each step once (a resumed run may log one twice)."""
    points = {entry["step"]: (entry["num_input_tokens_seen"], entry["eval_loss"])
              for entry in log_history if "eval_loss" in entry}
    return [points[step] for step in sorted(points)]


def plot_training_curves(log_history: list[dict], path: Path, title: str) -> None:
    """Training and held-out loss (left) and held-out perplexity (right) against tokens seen, as a PNG."""
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    loss_axes, perplexity_axes = figure.subplots(1, 2)
    held_out = held_out_points(log_history)
    _line(loss_axes, training_points(log_history), "training loss")
    _line(loss_axes, held_out, "held-out loss", marker="o")
    loss_axes.set(ylabel="loss (nats per token)", title="Loss")
    loss_axes.legend()
    _line(perplexity_axes, [(tokens, math.exp(min(loss, 700.0))) for tokens, loss in held_out], "held-out perplexity",
          marker="o", color="tab:orange")
    perplexity_axes.set(ylabel="perplexity", yscale="log", title="Held-out perplexity")
    for axis_ticks in (perplexity_axes.yaxis.set_major_formatter, perplexity_axes.yaxis.set_minor_formatter):
        axis_ticks(FuncFormatter(lambda value, _: f"{value:g}"))
    for axes in (loss_axes, perplexity_axes):
        _tokens_axis(axes)
    figure.suptitle(title)
    _save(figure, path)


def plot_comparison(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """Each named run's held-out loss against tokens seen, all on one chart (left), and the second half of training
    enlarged (right, where the runs are closest), as a PNG."""
    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    whole, end = figure.subplots(1, 2)
    half = max(tokens for points in curves.values() for tokens, _ in points) / 2
    for name, points in curves.items():
        _line(whole, points, name, marker="o", markersize=3)
        _line(end, [(tokens, loss) for tokens, loss in points if tokens >= half], name, marker="o", markersize=3)
    whole.set(ylabel="held-out loss (nats per token)", title="Whole run")
    end.set(title="Second half, enlarged")
    for axes in (whole, end):
        _tokens_axis(axes)
    whole.legend()
    figure.suptitle(title)
    _save(figure, path)


def _line(axes, points: list[tuple[int, float]], label: str, **style) -> None:
    axes.plot([x for x, _ in points], [y for _, y in points], label=label, **style)


def _tokens_axis(axes) -> None:
    axes.set_xlabel("tokens seen")
    axes.xaxis.set_major_formatter(EngFormatter())
    axes.grid(alpha=0.3)


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")
