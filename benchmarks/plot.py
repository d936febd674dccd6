"""An optional picture of the figures (matplotlib, the ``plot`` extra; not a dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .report import Cell


def plot(cells: Sequence[Cell], path: Path) -> str:
    """Bar charts of req/s and p50 per language and concurrency, one bar per server.

    Returns:
        What happened, to print: the file written, or why nothing was.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"

    measured = [c for c in cells if c.result is not None]
    groups: list[tuple[str, int]] = []
    for cell in measured:
        if (cell.language, cell.concurrency) not in groups:
            groups.append((cell.language, cell.concurrency))
    labels: list[str] = []
    for cell in measured:
        if cell.label not in labels:
            labels.append(cell.label)
    if not groups:
        return "nothing was measured: no plot"

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(groups) * 0.9), 8), sharex=True)
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        rates, p50s = [], []
        for language, c in groups:
            found = [
                x.result
                for x in measured
                if x.label == label and (x.language, x.concurrency) == (language, c)
            ]
            result = found[0] if found else None
            rates.append(result.rate if result else 0.0)
            p50s.append(result.p50 * 1000 if result else 0.0)
        xs = [g + (i - (len(labels) - 1) / 2) * width for g in range(len(groups))]
        top.bar(xs, rates, width, label=label)
        bottom.bar(xs, p50s, width, label=label)
    top.set_ylabel("requests/s")
    top.set_yscale("log")
    top.legend(fontsize="small")
    top.set_title("hello world: throughput (higher is better) and median latency (lower is better)")
    bottom.set_ylabel("p50 latency, ms")
    bottom.set_yscale("log")
    bottom.set_xticks(range(len(groups)))
    bottom.set_xticklabels([f"{lang}\nc={c}" for lang, c in groups], fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"
