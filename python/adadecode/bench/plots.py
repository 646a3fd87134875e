"""PNG plots of a benchmark run (matplotlib, the `bench` extra): decode tokens/s per system, the distribution of
per-prompt speedups over standard decoding, and at which layer tokens leave the model (exit heads vs the last
layer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import prompt_speedups


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _title(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    # Two short lines: on one, a figure with few bars cut the title off at both sides.
    return f"{m['model_name']} · {m['task']}\n{len(doc['prompts'])} prompts · {m['threads']} threads"


def _width(n_bars: int) -> float:
    return max(5.0, 1.4 * n_bars + 2.5)


def tokens_per_second(doc: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names = list(doc["summary"])
    tps = [doc["summary"][n]["tokens_per_second"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(_width(len(names)), 3.8))
    bars = ax.bar(names, tps, color=["#4c72b0" if n in doc["meta"]["modes"] else "#999999" for n in names])
    for bar, n in zip(bars, names, strict=True):
        sp = doc["summary"][n].get("speedup_vs_standard")
        label = f"{bar.get_height():.1f}" + (f"\n{sp:.2f}×" if sp is not None else "")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("decode tokens/s")
    ax.set_title(_title(doc), fontsize=9)
    ax.margins(y=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speedup_distribution(doc: dict[str, Any], path: Path) -> bool:
    names = [n for n in doc["summary"] if n != "standard" and prompt_speedups(doc, n)]
    if "standard" not in doc["summary"] or not names:
        return False
    plt = _pyplot()
    data = [prompt_speedups(doc, n) for n in names]
    fig, ax = plt.subplots(figsize=(_width(len(names)), 3.8))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    for i, values in enumerate(data, 1):
        ax.scatter([i] * len(values), values, s=8, alpha=0.5, color="#4c72b0")
    ax.axhline(1.0, color="#cc4444", lw=0.8, ls="--")
    ax.set_ylabel("per-prompt speedup over standard")
    ax.set_title(_title(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def exit_layers(doc: dict[str, Any], path: Path) -> bool:
    """Fraction of generated tokens taken from n-gram drafts, at each exit layer (accepted early exits) and at the
    last layer."""
    series = []
    n_layer = doc["meta"].get("n_layer")
    for name, s in doc["summary"].items():
        t = s.get("stats_totals", {})
        layers, accepted = t.get("exit_layers"), t.get("accepted_per_layer")
        if not layers or not accepted or len(layers) != len(accepted) or not s["tokens"]:
            continue
        drafts = t.get("ngram_accepted", 0)  # prompt-lookup drafts enter the pipeline at "layer 0"
        xs = [0] * bool(drafts) + [*layers, n_layer]
        ys = [drafts / s["tokens"]] * bool(drafts) + [a / s["tokens"] for a in accepted]
        ys.append(1.0 - (sum(accepted) + drafts) / s["tokens"])
        series.append((name, xs, ys))
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / len(series)
    for k, (name, xs, ys) in enumerate(series):
        ax.bar([x + (k - (len(series) - 1) / 2) * width for x in xs], ys, width=width, label=name)
    ax.set_xticks(sorted({x for _, xs, _ in series for x in xs}))
    ax.set_xlabel(f"layer the token left at (0 = n-gram draft, last = {n_layer})")
    ax.set_ylabel("fraction of generated tokens")
    ax.set_title(_title(doc), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def make_plots(doc: dict[str, Any], prefix: Path) -> list[Path]:
    """Write the plots next to the run's JSON; returns the files written. Raises ImportError without matplotlib."""
    _pyplot()
    out = [prefix.with_name(prefix.name + "-tokens-per-second.png")]
    tokens_per_second(doc, out[0])
    p = prefix.with_name(prefix.name + "-speedup.png")
    if speedup_distribution(doc, p):
        out.append(p)
    p = prefix.with_name(prefix.name + "-exit-layers.png")
    if exit_layers(doc, p):
        out.append(p)
    return out
