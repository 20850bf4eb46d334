"""The chart of docs/bench/vs_prefect.json: admission throughput, and pass time against backlog.

.bench/prefect-venv/bin/python benchmarks/vs_prefect/plot.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    with open(src) as f:
        doc = json.load(f)
    res = doc["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6))

    series = [
        ("Prefect server", res["prefect"], "tab:orange"),
        ("pushpool SQLite", res["sqlite"], "tab:blue"),
        ("pushpool DynamoDB (moto)", res.get("dynamodb", {}), "tab:green"),
    ]
    sizes = sorted({int(n) for _, r, _ in series for n in r.get("T", {})})
    width = 0.8 / len(series)
    for i, (label, r, color) in enumerate(series):
        xs = [j + (i - 1) * width for j, n in enumerate(sizes) if str(n) in r.get("T", {})]
        ys = [r["T"][str(n)]["per_second"] for n in sizes if str(n) in r.get("T", {})]
        if xs:
            bars = left.bar(xs, ys, width, label=label, color=color)
            left.bar_label(bars, labels=[f"{y:,.0f}" if y >= 10 else f"{y:.1f}" for y in ys], fontsize=8)
    left.set_xticks(range(len(sizes)), [f"{n:,} due runs" for n in sizes])
    left.set_yscale("log")
    left.set_ylabel("runs admitted per second (log)")
    left.set_title("T: admission throughput")
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=3, frameon=False)

    lines = [
        ("Prefect: poll + Pending for each due run", res["prefect"], "pass_seconds", "tab:orange", "-"),
        ("Prefect: poll only", res["prefect"], "poll_seconds", "tab:orange", ":"),
        ("pushpool SQLite: pass", res["sqlite"], "pass_seconds", "tab:blue", "-"),
        ("pushpool DynamoDB (moto): pass", res.get("dynamodb", {}), "pass_seconds", "tab:green", "-"),
    ]
    for label, r, key, color, style in lines:
        rows = r.get("S", {}).get("sizes", [])
        if rows:
            right.plot(
                [x["backlog"] for x in rows], [x[key] * 1000 for x in rows], style, marker="o", color=color, label=label
            )
    due = res["sqlite"]["S"]["sizes"][0]["due"]
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("scheduled runs in the pool (backlog, log)")
    right.set_ylabel("ms (log)")
    right.set_title(f"S: time per pass against backlog ({due} due)")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.18), ncol=2, frameon=False)
    m = doc["machine"]
    fig.suptitle(
        f"pushpool vs Prefect {doc['versions']['prefect']} — {m['nproc']} CPUs, {m['cpu']} ({doc['mode']} sizes)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
