"""What ``bench.annotation_loop`` leaves behind: the rounds as JSON, the learning curves as PNG, a summary table."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

METRICS = (("dice", "validation lesion Dice (global)"), ("auc", "validation COVID AUC"))


def write_rounds(path: Path, meta: dict[str, Any], rows: Sequence[dict]) -> Path:
    path.write_text(json.dumps({"meta": meta, "rounds": list(rows)}, indent=2))
    return path


def _by_budget(rows: Sequence[dict], strategy: str, key: str) -> dict[int, list[float]]:
    values: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row["strategy"] == strategy and row.get(key) is not None:
            values[row["corrections"]].append(float(row[key]))
    return dict(sorted(values.items()))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per strategy and budget: mean and sd over seeds of Dice and AUC, mean seconds per round."""
    out = []
    for strategy in sorted({r["strategy"] for r in rows}):
        dice, auc = _by_budget(rows, strategy, "dice"), _by_budget(rows, strategy, "auc")
        for budget in sorted(set(dice) | set(auc)):
            seconds = [r["seconds"]["round"] for r in rows
                       if r["strategy"] == strategy and r["corrections"] == budget and "seconds" in r]
            cell = lambda d: "-" if budget not in d else "{:.3f} ({:.3f})".format(*_mean_sd(d[budget]))  # noqa: E731
            out.append({"strategy": strategy, "corrections": budget, "seeds": len(dice.get(budget, [])),
                        "Dice": cell(dice), "AUC": cell(auc),
                        "round s": f"{statistics.fmean(seconds):.0f}" if seconds else "-"})
    return out


def plot_curves(rows: Sequence[dict], path: Path, title: str = "annotation loop") -> Path:
    """Validation Dice and AUC against the number of corrections: each strategy's mean over seeds, its spread
    (min to max) shaded, the start model as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = sorted({r["strategy"] for r in rows})
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, METRICS):
        start = [r[key] for r in rows if r["round"] == 0 and r.get(key) is not None]
        if start:
            ax.axhline(start[0], color="grey", linestyle=":", label="start model")
        for strategy in strategies:
            values = _by_budget(rows, strategy, key)
            if not values:
                continue
            budgets = list(values)
            means = [statistics.fmean(v) for v in values.values()]
            line, = ax.plot(budgets, means, marker="o", label=f"{strategy} (mean of {max(map(len, values.values()))})")
            ax.fill_between(budgets, [min(v) for v in values.values()], [max(v) for v in values.values()],
                            color=line.get_color(), alpha=0.18)
        ax.set_xlabel("corrections sent back")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
