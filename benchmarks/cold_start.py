"""Cold start of the AWS Lambda handlers: what `import handlers.aws_lambda` costs in a fresh interpreter.

Figures (median of --repeat fresh subprocesses, each timing its own import with perf_counter, so the
interpreter's own start is left out and printed apart):

- lazy: `import handlers.aws_lambda` as it ships (outside Lambda: no function named, so nothing
  function-specific is loaded) — the figure the targets judge;
- each function's init: the same import with Lambda's `_HANDLER` naming `dispatch`, `ecs_events` or `http`,
  which also loads that function's modules, boto3 and the DynamoDB store (what Lambda's init really does);
  reported beside the floor, not judged;
- the dispatch function's init with X-Ray tracing on (`LAMBDA_TASK_ROOT` set): only dispatch builds
  powertools' Tracer, and the X-Ray SDK it imports creates botocore clients at import; reported, not judged;
- floor: boto3, pydantic and powertools' Logger and Metrics, without any pushpool code: the cost of the
  allowed dependencies alone;
- eager: `import handlers.aws_lambda` plus every provider SDK (boto3, google.cloud.run_v2,
  azure.mgmt.containerinstance, azure.identity, modal), as a dispatcher that imported every provider up
  front would. `make bench` runs this script in `.bench/sdk-venv`, which has all four extras; run from a
  venv without them, the missing SDKs are named and the ratio is marked FAIL, since it cannot be judged.

Then `-X importtime`'s top entries (cumulative) of the lazy and the eager import, side by side.
Targets (issue 5): the lazy import <= 400 ms and <= 1/4 of the eager one. Target (issue 12): a dispatch pass
over an `ecs:push` pool, its submission reaching the ECS client, loads no Google module (judged only where
google-cloud-run is installed; the same process then passes over a `cloud-run-v2:push` pool, and the Google
modules that pass loads are counted, for contrast). Target (issue 13): that ECS pass, run with the Lambda
handler module loaded, loads no `azure` module either. Target (issue 14): nor anything of Modal's (modal,
modal_proto, grpclib, synchronicity; judged only where modal is installed). Prints PASS or FAIL for each and
exits 1 when one is missed.

    .bench/sdk-venv/bin/python benchmarks/cold_start.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 400.0
TARGET_RATIO = 0.25
SDKS = ("boto3", "google.cloud.run_v2", "azure.mgmt.containerinstance", "azure.identity", "modal")
FUNCTIONS = ("dispatch", "ecs_events", "http")
FLOOR = "import boto3, pydantic\nfrom aws_lambda_powertools import Logger, Metrics\n"
"""What the brief allows a cold start besides the core, with no pushpool code: a floor no handler beats."""
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "PUSHPOOL_STORE": "dynamodb://pushpool?region=us-east-1",
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (no `google`, no `azure`)
        return False


def child_env(handler: str | None, tracing: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("_HANDLER", "LAMBDA_TASK_ROOT")}
    env.update(ENV)
    if handler:
        env["_HANDLER"] = handler
    if tracing:  # in Lambda as far as powertools can tell, with tracing on; the X-Ray daemon need not listen
        env.update(LAMBDA_TASK_ROOT=str(ROOT), POWERTOOLS_TRACE_DISABLED="false")
    return env


def imports(modules: list[str]) -> str:
    return "".join(f"import {m}\n" for m in modules)


def timed_import(body: str, handler: str | None, tracing: bool = False) -> tuple[float, float]:
    """(ms of running `body`, ms of the whole process) in a fresh interpreter."""
    code = "import time\nt = time.perf_counter()\n" + body + "print((time.perf_counter() - t) * 1000)\n"
    start = time_ms()
    env = child_env(handler, tracing)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]), time_ms() - start


def time_ms() -> float:
    import time

    return time.perf_counter() * 1000


def median_import(body: str, handler: str | None, repeat: int, tracing: bool = False) -> tuple[float, float]:
    samples = [timed_import(body, handler, tracing) for _ in range(repeat)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def importtime(modules: list[str], handler: str | None) -> list[tuple[float, float, str]]:
    """(cumulative ms, self ms, module) of every import, from `python -X importtime`."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", imports(modules)],
        cwd=ROOT,
        env=child_env(handler),
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(cumulative_us) / 1000, int(self_us) / 1000, name.strip()))
    return rows


def top(rows: list[tuple[float, float, str]], n: int) -> list[str]:
    # Nested imports count inside their parents' cumulative time; show the biggest entries, indented by depth.
    best = sorted(rows, reverse=True)[:n]
    return [f"{cum:7.1f} {own:6.1f}  {name}" for cum, own, name in best]


PASS_PROBE = """
import json, os, sys, tempfile
import handlers.aws_lambda  # what the Lambda dispatch function has loaded when its pass runs
from dispatcher import deployments, pools
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.store.sqlite import SQLiteStore

def google():
    return sorted(m for m in sys.modules if m == "google" or m.startswith("google."))

def modal():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("modal", "modal_proto", "grpclib", "synchronicity"))

store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "pushpool.db"))
pools.create_pool(store, "ecs", type="ecs:push",
                  job_variables={"image": "x", "cluster": "c", "network_configuration": {"subnets": ["subnet-1"]}})
pools.create_pool(store, "gcp", type="cloud-run-v2:push", job_variables={"image": "x"})
deployments.create_deployment(store, "on-ecs", pool="ecs")
deployments.create_deployment(store, "on-gcp", pool="gcp")
deployments.run_deployment(store, "on-ecs")
deployments.run_deployment(store, "on-gcp")
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: the submission fails at once, transiently
dispatcher = Dispatcher(store, settings=Settings(provider_timeout_seconds=20), callback_base_url="https://cb.example")
ecs = dispatcher.run_pass(pool="ecs")
after_ecs = google()
azure_after_ecs = sorted(m for m in sys.modules if m == "azure" or m.startswith("azure."))
modal_after_ecs = modal()
gcp = dispatcher.run_pass(pool="gcp")
print(json.dumps({"ecs_reached": "boto3" in sys.modules and bool(ecs.retrying or ecs.submitted),
                  "after_ecs": after_ecs, "azure_after_ecs": azure_after_ecs, "modal_after_ecs": modal_after_ecs,
                  "after_gcp": len(google()),
                  "run_v2": "google.cloud.run_v2" in sys.modules}))
"""


def pass_probe() -> dict[str, object]:
    """Run PASS_PROBE in a fresh interpreter: the Google and Azure modules an ECS pass, then a Cloud Run pass, load."""
    import json

    env = {k: v for k, v in child_env(None).items() if k != "PUSHPOOL_STORE"}
    env["GOOGLE_CLOUD_PROJECT"] = "cold-start-probe"
    result = subprocess.run(
        [sys.executable, "-c", PASS_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"the pass probe failed: {result.stderr.strip()[-500:]}")
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="fresh subprocesses per figure (median)")
    parser.add_argument("--top", type=int, default=15, help="-X importtime entries to show")
    args = parser.parse_args()

    present = [m for m in SDKS if installed(m)]
    missing = [m for m in SDKS if m not in present]
    lazy_modules = ["handlers.aws_lambda"]
    eager_modules = lazy_modules + present

    python = sys.version.split()[0]
    print(f"cold start of handlers.aws_lambda — Python {python}, median of {args.repeat} fresh processes")
    print(f"provider SDKs installed: {', '.join(present) or 'none'}")
    if missing:
        print(f"not installed (left out of the eager figure): {', '.join(missing)}; `make bench` runs this")
        print("script in .bench/sdk-venv, which has every extra")
    print()

    empty, empty_wall = median_import("", None, args.repeat)
    floor, floor_wall = median_import(FLOOR, None, args.repeat)
    lazy, lazy_wall = median_import(imports(lazy_modules), None, args.repeat)
    eager, eager_wall = median_import(imports(eager_modules), None, args.repeat)
    functions = {f: median_import(imports(lazy_modules), f"handlers/aws_lambda.{f}", args.repeat) for f in FUNCTIONS}
    traced, traced_wall = median_import(imports(lazy_modules), "handlers/aws_lambda.dispatch", args.repeat, True)

    rows = [
        ("interpreter alone (nothing imported)", empty, empty_wall),
        ("floor: boto3 + pydantic + powertools Logger/Metrics", floor, floor_wall),
        ("lazy: import handlers.aws_lambda", lazy, lazy_wall),
        *((f"  init of the {f} function (_HANDLER set)", ms, wall) for f, (ms, wall) in functions.items()),
        ("  init of the dispatch function, X-Ray tracing on", traced, traced_wall),
        (f"eager: handlers.aws_lambda + the {len(present)} provider SDKs installed", eager, eager_wall),
    ]
    width = max(len(what) for what, _, _ in rows)
    print(f"{'what':{width}} {'import ms':>10} {'process ms':>11}")
    for what, ms, wall in rows:
        print(f"{what:{width}} {ms:10.0f} {wall:11.0f}")
    print()

    lazy_rows, eager_rows = importtime(lazy_modules, None), importtime(eager_modules, None)
    left, right = top(lazy_rows, args.top), top(eager_rows, args.top)
    column = max(len(line) for line in left) + 4
    print(f"-X importtime, top {args.top} by cumulative ms (cumulative, self, module)")
    print(f"{'lazy':{column}}eager")
    for a, b in zip(left, right, strict=False):
        print(f"{a:{column}}{b}")
    print()

    probe = pass_probe()
    gcp_installed = installed("google.cloud.run_v2")
    after_ecs = ", ".join(str(m) for m in probe["after_ecs"]) or "none"  # type: ignore[attr-defined]
    reached = probe["ecs_reached"]
    print(f"an ecs:push pass (its submission reached the ECS client: {reached}): Google modules loaded: {after_ecs}")
    modal_after_ecs = ", ".join(str(m) for m in probe["modal_after_ecs"]) or "none"  # type: ignore[attr-defined]
    print(f"the same ecs:push pass: Modal modules loaded: {modal_after_ecs}")
    print(f"a cloud-run-v2:push pass after it: {probe['after_gcp']} Google modules loaded (run_v2: {probe['run_v2']})")
    print()

    ratio = lazy / eager if eager else float("nan")
    azure_after_ecs = [str(m) for m in probe["azure_after_ecs"]]  # type: ignore[attr-defined]
    verdicts = [
        (
            "an ecs:push pass imports nothing of Google's"
            + ("" if gcp_installed else " (not judged: google-cloud-run is not installed here)"),
            bool(probe["ecs_reached"]) and not probe["after_ecs"] and bool(probe["run_v2"]) and gcp_installed,
        ),
        (
            f"an ecs:push pass loads no azure module ({', '.join(azure_after_ecs) or 'none'})",
            bool(probe["ecs_reached"]) and not azure_after_ecs,
        ),
        (
            "an ecs:push pass imports nothing of Modal's"
            + ("" if installed("modal") else " (not judged: modal is not installed here)"),
            bool(probe["ecs_reached"]) and not probe["modal_after_ecs"] and installed("modal"),
        ),
        (f"lazy import {lazy:.0f} ms <= {TARGET_MS:.0f} ms", lazy <= TARGET_MS),
        (
            f"lazy / eager = {lazy:.0f} / {eager:.0f} = {ratio:.2f} <= {TARGET_RATIO}",
            ratio <= TARGET_RATIO and not missing,
        ),
    ]
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if missing:
        print(f"      not judged: the eager figure lacks {', '.join(missing)}, the SDKs that make it heavy")
    slowest = max(functions, key=lambda f: functions[f][0])
    print(
        f"info  the slowest function init ({slowest}) takes {functions[slowest][0]:.0f} ms, {floor:.0f} ms of it the "
        f"floor; with X-Ray tracing on, dispatch's takes {traced:.0f} ms (ecs_events and http never load X-Ray)"
    )
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
