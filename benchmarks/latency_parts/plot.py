"""The chart of docs/bench/latency.json: for each measure, the share of runs submitted within x seconds.

.bench/prefect-venv/bin/python benchmarks/latency_parts/plot.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("serve", "pushpool serve (SQLite)", "tab:blue"),
    ("aws", "pushpool AWS functions (moto)", "tab:green"),
    ("prefect", "Prefect server + process worker", "tab:orange"),
]
TITLES = {
    "a": "(a) ad-hoc run created → submitted",
    "b": "(b) slot freed → next run submitted",
    "c": "(c) scheduled time → submitted",
}


def main(src: str, dst: str) -> None:
    with open(src) as f:
        doc = json.load(f)
    res, stats = doc["results"], doc["stats"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharey=True)
    for ax, (key, title) in zip(axes, TITLES.items(), strict=True):
        for system, label, color in SERIES:
            samples = sorted(res.get(system, {}).get(key, {}).get("samples") or [])
            if not samples:
                continue
            n = len(samples)
            ys = [100 * (i + 1) / n for i in range(n)]
            st = stats[system][key]
            ax.step(samples, ys, where="post", color=color, label=f"{label}: p99 {st['p99']:.2f} s")
        for target, style in ((1.0, ":"), (2.0, "--")):
            ax.axvline(target, color="grey", linestyle=style, linewidth=0.8)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("seconds (symmetric log; dotted 1 s, dashed 2 s)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7.5, loc="lower right")
    axes[0].set_ylabel("% of runs submitted within x")
    m = doc["machine"]
    prefect = doc.get("versions", {}).get("prefect", "")
    fig.suptitle(
        f"Start latency, pushpool vs Prefect {prefect} — {m['nproc']} CPUs, {m['cpu']} "
        f"({doc['mode']} sizes, {doc['generated'][:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
