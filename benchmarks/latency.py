"""Start latency, side by side in one run: pushpool `serve`, pushpool's AWS functions, and Prefect (issue 16).

    .venv/bin/python benchmarks/latency.py [--quick] [--no-prefect] [--no-aws]      (or: make bench)

Three measures, p50 / p99 / max over at least 200 runs each (--quick: fewer):
  (a) ad-hoc run created -> submitted, with room in the pool;
  (b) slot freed -> the next waiting run submitted (pool limit N; runs end by callback / ECS STOPPED event);
  (c) scheduled time -> submitted.
Each system is measured in turn (serve and Prefect: the three measures at once on three pools; AWS: one after
another, each on a fresh moto); every figure comes from the system's own state history (latency_parts/*_side.py
say which state is which):
  - pushpool serve: a real `pushpool serve` subprocess at its default settings on SQLite, process jobs
    (latency_parts/serve_side.py);
  - pushpool on AWS: handlers/aws_lambda.py invoked as Lambda invokes them, each function's instances in
    processes of their own, DynamoDB and ECS on moto's server (fresh for each measure), the dispatch function
    on a one-minute schedule (latency_parts/aws_side.py, lambda_service.py);
  - Prefect: `prefect server start` and one `prefect worker start --type process` per pool, default settings,
    from .bench/prefect-venv as benchmarks/vs_prefect does (latency_parts/prefect_side.py).
Creations, job ends and the first tick fall at random offsets, so every phase of a poll or tick is sampled.

Targets (PASS/FAIL lines; exit 1 if one fails): pushpool p99 <= 1 s under serve and <= 2 s on AWS for (a)
and (b), <= 1 s past the scheduled time for (c) on both; each p99 at least 5x better than Prefect's of the
same measure. Writes docs/bench/latency.json and docs/bench/latency.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "vs_prefect"))

import run as vs_prefect  # noqa: E402 - benchmarks/vs_prefect/run.py: Prefect's venv and server, the machine
from latency_parts import serve_side  # noqa: E402

OUT_JSON = ROOT / "docs" / "bench" / "latency.json"
SYSTEMS = ("serve", "aws", "prefect")
LABELS = {"serve": "pushpool serve (SQLite)", "aws": "pushpool AWS (moto)", "prefect": "Prefect server + worker"}
MEASURES = {
    "a": "(a) ad-hoc run created -> submitted",
    "b": "(b) slot freed -> next run submitted",
    "c": "(c) scheduled time -> submitted",
}
TARGETS = {("serve", "a"): 1.0, ("serve", "b"): 1.0, ("serve", "c"): 1.0}
TARGETS |= {("aws", "a"): 2.0, ("aws", "b"): 2.0, ("aws", "c"): 1.0}
RATIO = 5.0
DISPATCH_GB = 0.5
"""The dispatch function's memory in infra/template.yaml (MemorySize 512)."""

FULL: dict[str, Any] = {"n": 200, "serve_limit": 8, "aws_limit": 40, "prefect_limit": 50, "window": 120.0}
QUICK: dict[str, Any] = {"n": 30, "serve_limit": 4, "aws_limit": 15, "prefect_limit": 10, "window": 40.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# statistics -----------------------------------------------------------------------------------------------------
def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank: a value that was measured, never an interpolation."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    samples = result.get("samples") or []
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "min": min(samples),
    }


# the three systems ------------------------------------------------------------------------------------------------
def run_serve(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    n = cfg["n"]
    sizes = serve_side.Sizes(adhoc=n, freed=n, scheduled=n, limit=cfg["serve_limit"], window=min(cfg["window"], 100.0))
    return serve_side.run_all(workdir / "serve", sizes, log=log)


def run_aws(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    out = workdir / "aws.json"
    n = cfg["n"]
    args = ["--adhoc", str(n), "--freed", str(n), "--scheduled", str(n), "--limit", str(cfg["aws_limit"])]
    args += ["--window", str(cfg["window"]), "--workdir", str(workdir / "aws-functions")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
    with open(workdir / "aws.log", "w") as handler_output:  # the functions' structured logs and EMF metrics
        subprocess.run(
            [sys.executable, "-m", "latency_parts.aws_side", "--out", str(out), *args],
            cwd=ROOT,
            env=env,
            stdout=handler_output,
            check=True,
        )
    return dict(json.loads(out.read_text()))


def run_prefect(cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    out = workdir / "prefect.json"
    n = cfg["n"]
    args = ["--adhoc", str(n), "--freed", str(n), "--scheduled", str(n), "--limit", str(cfg["prefect_limit"])]
    args += ["--window", str(cfg["window"])]
    with vs_prefect.prefect_server() as (api, home):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=api, PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="ERROR")
        subprocess.run(
            [str(vs_prefect.PREFECT_PY), str(HERE / "latency_parts" / "prefect_side.py"), "--out", str(out), *args],
            env=env,
            check=True,
        )
    return dict(json.loads(out.read_text()))


# the table and the verdicts ---------------------------------------------------------------------------------------
def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s"


def table(stats: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = ["measure", *[LABELS[s] + " p50 / p99 / max" for s in SYSTEMS if s in stats]]
    rows = []
    for key, title in MEASURES.items():
        row = [title]
        for system in SYSTEMS:
            if system not in stats:
                continue
            st = stats[system].get(key, {"n": 0})
            if not st.get("n"):
                row.append("—")
                continue
            row.append(f"{st['p50']:.2f} / {st['p99']:.2f} / {st['max']:.2f} s (n={st['n']})")
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def verdicts(stats: dict[str, dict[str, dict[str, Any]]], n_wanted: int) -> list[tuple[str, bool | None]]:
    """(sentence, met); met None is `info`: the figure cannot judge the target (said why)."""
    found: list[tuple[str, bool | None]] = []
    prefect = stats.get("prefect", {})
    for (system, key), limit in TARGETS.items():
        if system not in stats:
            continue
        st = stats[system].get(key, {"n": 0})
        what = f"{LABELS[system]} {MEASURES[key]}"
        if st.get("n", 0) < n_wanted:
            found.append((f"{what}: {st.get('n', 0)} samples of {n_wanted} (runs unfinished or failed)", False))
            if not st.get("n"):
                continue
        found.append((f"{what}: p99 {_s(st['p99'])} (target <= {limit:g} s)", st["p99"] <= limit))
        theirs = prefect.get(key, {"n": 0})
        if not theirs.get("n"):
            continue
        if theirs["p99"] <= 0:
            found.append(
                (
                    f"{what}: p99 {_s(st['p99'])} vs Prefect's {_s(theirs['p99'])}: no ratio, Prefect's worker "
                    f"submits runs ahead of their time (prefetch 10 s)",
                    None,
                )
            )
            continue
        ratio = theirs["p99"] / max(st["p99"], 1e-3)
        found.append(
            (
                f"{what}: Prefect's p99 {_s(theirs['p99'])} is {ratio:.1f}x pushpool's (target >= {RATIO:g}x)",
                ratio >= RATIO,
            )
        )
    return found


def lambda_cost(results: dict[str, Any]) -> str | None:
    """The dispatch function's invocations and GB-seconds per 1,000 runs of the AWS side (info, not a target).

    Durations are this machine's, against moto: an upper bound on Lambda's, which talks to DynamoDB and ECS.
    """
    aws = results.get("aws", {})
    calls = aws.get("invocations")
    runs = sum(aws.get(k, {}).get("runs", 0) for k in MEASURES)
    if not calls or not runs:
        return None
    count = sum(v["count"] for v in calls.values())
    seconds = sum(v["seconds"] for v in calls.values())
    per = 1000 / runs
    return (
        f"AWS dispatch function: {count} invocations ({calls['tick']['count']} ticks, {calls['invoke']['count']} "
        f"wake-up invokes) for {runs} runs: {count * per:,.0f} requests and {seconds * DISPATCH_GB * per:,.0f} "
        f"GB-s per 1,000 runs ({DISPATCH_GB * 1024:.0f} MB, durations against moto, waits included)"
    )


def _ms(figures: dict[str, Any]) -> str:
    if "p50" not in figures:
        return "—"
    return f"{1000 * figures['p50']:.0f} / {1000 * figures['p99']:.0f} / {1000 * figures['max']:.0f} ms"


def aws_breakdown(results: dict[str, Any]) -> list[str]:
    """Per AWS measure, where its time went: moto's request times (DynamoDB, ECS), the dispatch passes' own
    durations, the invocations' invoke-to-start times, and what the dispatch function ran (info, p50/p99/max)."""
    lines = []
    for key, title in MEASURES.items():
        where = results.get("aws", {}).get(key, {}).get("where")
        if not where:
            continue
        moto = where.get("moto") or {}
        ddb, ecs = moto.get("dynamodb") or {}, moto.get("ecs") or {}
        calls = where["invocations"]
        lines.append(
            f"AWS {title[:3]} where the time went: moto DynamoDB {ddb.get('requests', 0):,} requests, answered "
            f"{_ms(ddb.get('answered', {}))} (moto's own work {_ms(ddb.get('served', {}))}, the rest queued behind "
            f"other requests); moto ECS answered {_ms(ecs.get('answered', {}))}; dispatch passes "
            f"{_ms(where['passes'])} (n={where['passes'].get('n', 0)}, their requests to moto included); "
            f"invoke-to-start {_ms(where['invoke_to_start'])}; {calls['tick']['count']} ticks and "
            f"{calls['invoke']['count']} invokes on {where['dispatch_instances']} dispatch instances "
            f"({calls['tick']['cold'] + calls['invoke']['cold']} cold starts)"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['n']} runs per measure (a few minutes)")
    parser.add_argument("--no-prefect", action="store_true", help="pushpool only (no Prefect venv needed)")
    parser.add_argument("--no-aws", action="store_true", help="skip the AWS functions on moto")
    parser.add_argument("--no-serve", action="store_true", help="skip pushpool serve")
    parser.add_argument("--out", type=Path, default=OUT_JSON, help="results JSON (the chart goes beside it)")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if not args.no_prefect:
        vs_prefect.ensure_prefect_venv()
    started = time.monotonic()
    info: dict[str, Any] = {"machine": vs_prefect.machine()}
    info["versions"] = vs_prefect.versions() if not args.no_prefect else {}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pushpool-latency-") as tmp:
        workdir = Path(tmp)
        plan = [("serve", args.no_serve, run_serve), ("aws", args.no_aws, run_aws)]
        plan.append(("prefect", args.no_prefect, run_prefect))
        for system, skip, fn in plan:
            if skip:
                continue
            log(f"== {LABELS[system]}")
            t0 = time.monotonic()
            try:
                results[system] = fn(cfg, workdir)
            except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:  # the others still count
                log(f"   {LABELS[system]} failed: {exc}")
                results[system] = {key: {"error": str(exc), "samples": []} for key in MEASURES}
            log(f"   {time.monotonic() - t0:.0f} s")
    stats = {s: {k: summarise(r[k]) for k in MEASURES if k in r} for s, r in results.items()}
    text = table(stats)
    judged = verdicts(stats, cfg["n"])
    doc = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick else ""),
        "mode": "quick" if args.quick else "full",
        "sizes": cfg,
        "seconds": round(time.monotonic() - started),
        **info,
        "stats": stats,
        "results": results,
        "table": text,
        "verdicts": [{"target": what, "met": ok} for what, ok in judged],
        "lambda_cost": lambda_cost(results),
        "aws_breakdown": aws_breakdown(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    png = args.out.with_suffix(".png")
    if vs_prefect.PREFECT_PY.exists():
        subprocess.run([str(vs_prefect.PREFECT_PY), str(HERE / "latency_parts" / "plot.py"), str(args.out), str(png)])
    m = info["machine"]
    print(f"\nstart latency — {m['nproc']} CPUs ({m['cpu']}), {doc['mode']} sizes, {doc['seconds']} s\n")
    print(text)
    print()
    for what, ok in judged:
        print(f"{'info' if ok is None else 'PASS' if ok else 'FAIL'}  {what}")
    cost = lambda_cost(results)
    if cost:
        print(f"info  {cost}")
    for line in aws_breakdown(results):
        print(f"info  {line}")
    print(f"\nwrote {args.out}" + (f" and {png}" if png.exists() else ""))
    return 0 if all(ok is not False for _, ok in judged) else 1


if __name__ == "__main__":
    sys.exit(main())
