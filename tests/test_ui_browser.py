"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `pushpool serve`.

One `pushpool serve` process on a temporary SQLite store runs real `process` jobs; the test seeds the store,
signs in through the login form and reads the pages as a person would, checking them against the store.
PUSHPOOL_SCREENSHOTS=docs/images writes the README's screenshots (off in `make test`, so the tree stays clean).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright
from serve_process import start_serve

from dispatcher import deployments, pools
from dispatcher.cancelling import cancel_run
from dispatcher.errors import InvalidInput
from dispatcher.models import FlowRun, utcnow
from dispatcher.preview import preview_pool
from dispatcher.schedules import IntervalSchedule
from dispatcher.states import StateType
from dispatcher.store.base import pool_slot, queue_slot
from dispatcher.store.sqlite import SQLiteStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "ui-test-token-0123456789"
POOL = "etl"
LONG = 180
"""Seconds the slot-holding jobs sleep: far longer than the module takes, so the gauges stay put; teardown
cancels them."""
SHOTS = os.environ.get("PUSHPOOL_SCREENSHOTS")
"""A folder to write screenshots to (docs/images for the README); unset, none are taken."""


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def job(seconds: float, code: int = 0, say: str = "") -> dict[str, Any]:
    script = f"import sys, time; print({say!r}, flush=True); time.sleep({seconds}); sys.exit({code})"
    # `python3` from PATH, not sys.executable: the job shows on the screenshots, and no path of this machine may.
    return {"command": ["python3", "-c", script]}


@dataclass
class Site:
    url: str
    store: SQLiteStore
    page: Any
    context: Any
    runs: dict[str, FlowRun]

    def open(self, path: str) -> Any:
        self.page.goto(self.url + path)
        return self.page

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)

    def sign_in(self) -> None:
        self.open("/ui")
        self.page.fill("#token", TOKEN)
        self.page.click("button:has-text('Sign in')")
        expect(self.page.locator("h1")).to_have_text("Work pools")


def seed_pools(store: SQLiteStore) -> None:
    pools.create_pool(store, POOL, concurrency_limit=3, description="Nightly data pipelines")
    pools.create_queue(store, POOL, "critical", priority=1, concurrency_limit=1)
    pools.create_queue(store, POOL, "backfill", priority=10)
    pools.create_pool(store, "ml-training", concurrency_limit=2, description="GPU training jobs", paused=True)
    deployments.create_deployment(store, "ingest", pool=POOL, queue="critical", job_variables=job(LONG))
    deployments.create_deployment(store, "transform", pool=POOL, queue="default", job_variables=job(LONG))
    deployments.create_deployment(store, "backfill-2025", pool=POOL, queue="backfill", job_variables=job(LONG))
    deployments.create_deployment(
        store, "report", pool=POOL, queue="default", job_variables=job(0.2), schedules=[IntervalSchedule(interval=900)]
    )
    deployments.create_deployment(store, "train", pool="ml-training", job_variables=job(1))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("ui")
    store = SQLiteStore(str(tmp / "s.db"))
    seed_pools(store)
    runs = {
        "done": deployments.run_deployment(store, "transform", job_variables=job(0.3, 0, "rows loaded: 1200")),
        "failed": deployments.run_deployment(store, "transform", job_variables=job(0.3, 1, "connection refused")),
        "train": deployments.run_deployment(store, "train"),
    }
    env = {
        **os.environ,
        "PUSHPOOL_STORE": f"sqlite:///{tmp / 's.db'}",
        "PUSHPOOL_PROCESS_DIR": str(tmp / "procs"),
        "PUSHPOOL_API_TOKEN": TOKEN,
        "PUSHPOOL_RECONCILE_AFTER_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PUSHPOOL_CALLBACK_BASE_URL", None)
    serve, url = start_serve(env, "--interval", "0.3", "--quiet", timeout=20)
    browser_manager = None
    try:
        for key in ("done", "failed"):
            wait_for(lambda k=key: store.get_run(runs[k].id).is_terminal, f"the {key} run to end")  # type: ignore[union-attr]
        # Then the backlog: critical's limit 1 and the pool's 3 leave backfill waiting, as the waterfall says.
        for deployment in ("ingest", "ingest", "transform", "transform", "backfill-2025", "backfill-2025"):
            run = deployments.run_deployment(store, deployment)
            runs.setdefault(deployment, run)
        later = utcnow() + timedelta(minutes=20)
        runs["later"] = deployments.run_deployment(store, "backfill-2025", scheduled_time=later)
        wait_for(lambda: store.slots([pool_slot(POOL)])[pool_slot(POOL)].active == 3, "three runs to hold slots")
        wait_for(
            lambda: all(r.state is StateType.RUNNING for r in store.active_runs(POOL)), "the admitted runs to start"
        )
        browser_manager = sync_playwright().start()
        context = browser_manager.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),  # a fresh profile every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(10_000)
        site = Site(url, store, context.new_page(), context, runs)
        site.sign_in()
        yield site
        context.close()
    finally:
        if browser_manager is not None:
            browser_manager.stop()
        # Stop the jobs through the dispatcher (pause, cancel, then its pass kills them), then the server.
        pools.update_pool(store, POOL, paused=True)
        for run in store.active_runs(POOL):
            cancel_run(store, run.id)
        if serve.poll() is None:
            try:
                wait_for(lambda: not store.active_runs(POOL), "the jobs to stop", timeout=20)
            finally:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait()
        # A job's runner may still be retrying its last callback to the stopped server: end its process group
        # (each runner leads its own and wrote its pid), so no process of this test outlives it.
        for pid_file in (tmp / "procs").glob("*/pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        store.close()


# ----------------------------------------------------------------------------------------------------------
def test_signing_in_sets_a_strict_http_only_cookie_that_is_not_the_token(site: Site) -> None:
    cookies = {c["name"]: c for c in site.context.cookies()}
    session = cookies["pushpool_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict" and session["path"] == "/ui"
    assert TOKEN not in session["value"]
    assert session["secure"] is False  # plain-http localhost (docs/dashboard.md); Secure behind HTTPS


def test_a_wrong_token_is_refused_on_the_login_page(site: Site) -> None:
    saved = site.context.cookies()
    site.context.clear_cookies()
    page = site.context.new_page()
    try:
        page.goto(site.url + "/ui/pools/etl")
        assert "/ui/login?next=%2Fui%2Fpools%2Fetl" in page.url
        page.fill("#token", "not-the-token")
        page.click("button:has-text('Sign in')")
        expect(page.locator("#error")).to_contain_text("Wrong token")
        assert not site.context.cookies()
    finally:
        page.close()
        site.context.add_cookies(saved)


def test_pools_page_gauges_match_the_store(site: Site) -> None:
    page = site.open("/ui")
    store = site.store
    row = page.locator("tr[data-pool='etl']")
    active = store.slots([pool_slot(POOL)])[pool_slot(POOL)].active
    waiting = sum(len(store.due_runs(POOL, q.name, utcnow(), 1000)) for q in store.list_queues(POOL))
    assert (active, waiting) == (3, 3)
    expect(row.locator(".gauge-text")).to_have_text(f"{active} / 3")
    expect(row.locator(".waiting")).to_have_text(str(waiting))
    expect(row.locator(".pill")).to_have_text("READY")
    paused = page.locator("tr[data-pool='ml-training']")
    expect(paused.locator(".pill")).to_have_text("PAUSED")
    expect(paused.locator(".why")).to_contain_text("paused")
    site.shot("pools")


def test_pool_page_shows_queues_in_priority_order_the_waterfall_and_the_timeline(site: Site) -> None:
    page = site.open(f"/ui/pools/{POOL}")
    store = site.store
    queues = page.locator("#queues tr[data-queue]")
    expect(queues).to_have_count(3)
    assert [queues.nth(i).get_attribute("data-queue") for i in range(3)] == ["critical", "default", "backfill"]
    slots = store.slots([queue_slot(POOL, q) for q in ("critical", "default", "backfill")])
    for name in ("critical", "default", "backfill"):
        expect(page.locator(f"#queues tr[data-queue='{name}'] .gauge-text")).to_contain_text(
            f"{slots[queue_slot(POOL, name)].active} /"
        )
    # Each waiting run shows the one reason `work-pool preview` gives for it.
    preview = preview_pool(store, POOL)
    waiting = [r for q in preview.queues for r in q.runs if r.due]
    assert len(waiting) == 3 and all(r.reason for r in waiting)
    for r in waiting:
        expect(page.locator(f"#waterfall li[data-run='{r.id}'] .reason")).to_have_text(r.reason or "")
    expect(page.locator("#upcoming")).to_contain_text(site.runs["later"].name)
    # The timeline: a bar per run, coloured by state; the ended runs and the running ones are there.
    bars = page.locator("#timeline g.bar")
    expect(page.locator(f"#timeline g.bar[data-run='{site.runs['done'].id}']")).to_have_attribute(
        "data-state", "COMPLETED"
    )
    expect(page.locator(f"#timeline g.bar[data-run='{site.runs['failed'].id}']")).to_have_attribute(
        "data-state", "FAILED"
    )
    assert page.locator("#timeline g.bar[data-state='RUNNING'] rect.hold").count() == 3
    assert bars.count() >= 8
    site.shot("pool")


def test_runs_page_filters_by_state_and_a_run_page_shows_history_job_and_logs(site: Site) -> None:
    page = site.open("/ui/runs")
    page.select_option("select[name='pool']", POOL)
    page.select_option("select[name='state']", "FAILED")
    page.click("button:has-text('Filter')")
    rows = page.locator("#runs tr[data-run]")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-run") == site.runs["failed"].id
    site.open(f"/ui/runs?pool={POOL}")
    expect(page.locator("#runs tr[data-run]")).to_have_count(len(site.store.list_runs(POOL)))
    site.shot("runs")
    done = site.runs["done"]
    site.open(f"/ui/runs/{done.id}")
    expect(page.locator("#summary .pill")).to_have_text("Completed")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(len(site.store.get_run(done.id).state_history))  # type: ignore[union-attr]
    job_text = page.locator("#job").inner_text()
    assert done.id in job_text and "PUSHPOOL_CALLBACK_TOKEN" in job_text and '"****"' in job_text
    site.shot("run")
    page.click("a:has-text('Logs')")
    expect(page.locator("#logs")).to_contain_text("rows loaded: 1200")


def test_actions_change_the_store_and_a_bad_value_shows_the_core_sentence(site: Site) -> None:
    page = site.open(f"/ui/pools/{POOL}")
    store = site.store
    queue_row = page.locator("#queues tr[data-queue='backfill']")
    queue_row.locator("button:has-text('Pause')").click()
    expect(page.locator("#queues tr[data-queue='backfill'] .pill")).to_have_text("PAUSED")
    assert store.get_queue(POOL, "backfill").paused is True  # type: ignore[union-attr]
    page.locator("#queues tr[data-queue='backfill'] button:has-text('Resume')").click()
    expect(page.locator("#queues tr[data-queue='backfill'] .pill")).not_to_have_text("PAUSED")
    assert store.get_queue(POOL, "backfill").paused is False  # type: ignore[union-attr]
    # A bad limit: the core's one sentence, the status of the error, nothing written.
    with pytest.raises(InvalidInput) as refused:
        pools.limit_arg("concurrency_limit", "three")  # type: ignore[arg-type]
    page.fill("#summary form.limit input[name='limit']", "three")
    page.click("#summary form.limit button")
    expect(page.locator("#error")).to_have_text(str(refused.value))
    assert store.get_pool(POOL).concurrency_limit == 3  # type: ignore[union-attr]
    # Start a deployment run: the browser lands on the new run's page.
    before = {r.id for r in store.runs_of_deployment("report")}
    page = site.open(f"/ui/pools/{POOL}")
    page.locator("tr[data-deployment='report'] button:has-text('Run now')").click()
    expect(page.locator("#summary h1")).to_contain_text("report-")
    (new,) = [r for r in store.runs_of_deployment("report") if r.id not in before]
    assert page.url.endswith(f"/ui/runs/{new.id}")
    # A custom run: parameters typed as JSON reach the run.
    page = site.open(f"/ui/pools/{POOL}")
    row = page.locator("tr[data-deployment='report']")
    row.locator("summary:has-text('Custom run')").click()
    row.locator("textarea[name='parameters']").fill('{"region": "eu"}')
    row.locator("button:has-text('Run')").last.click()
    expect(page.locator("#summary h1")).to_contain_text("report-")
    custom = store.get_run(page.url.rsplit("/", 1)[1])
    assert custom is not None and custom.parameters == {"region": "eu"}
    # Cancel a run (after the confirmation dialog).
    later = site.runs["later"]
    page = site.open(f"/ui/runs/{later.id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel run')")
    expect(page.locator("#summary .pill")).to_have_text("Cancelled")
    assert store.get_run(later.id).state is StateType.CANCELLED  # type: ignore[union-attr]


def test_an_action_without_the_cookie_or_with_a_bad_csrf_token_is_refused_and_writes_nothing(site: Site) -> None:
    page = site.open(f"/ui/pools/{POOL}")
    store = site.store
    pause = page.locator("#summary form[action$='/pause']")
    pause.locator("input[name='csrf']").evaluate("input => { input.value = 'forged' }")
    pause.locator("button").click()
    expect(page.locator("h1")).to_have_text("Refused")
    expect(page.locator("#message")).to_contain_text("CSRF")
    assert store.get_pool(POOL).paused is False  # type: ignore[union-attr]
    page = site.open(f"/ui/pools/{POOL}")
    saved = site.context.cookies()
    site.context.clear_cookies()
    try:
        page.locator("#summary form[action$='/pause'] button").click()
        expect(page.locator("h1")).to_have_text("Sign in first")
        assert store.get_pool(POOL).paused is False  # type: ignore[union-attr]
    finally:
        site.context.add_cookies(saved)


def test_an_open_page_refreshes_itself_when_a_run_changes_state(site: Site) -> None:
    store = site.store
    waiting = next(r for r in store.list_runs(POOL, queue="backfill") if r.state is StateType.SCHEDULED)
    page = site.open(f"/ui/runs/{waiting.id}")
    expect(page.locator("#summary .pill")).to_have_text("Scheduled")
    page.evaluate("window.__notReloaded = true")
    rows = page.locator("#history tbody tr").count()
    cancel_run(store, waiting.id, message="cancelled by the browser test")
    expect(page.locator("#summary .pill")).to_have_text("Cancelled", timeout=10_000)
    expect(page.locator("#history tbody tr")).to_have_count(rows + 1)
    assert page.evaluate("window.__notReloaded") is True
    # The pools page follows too: one run fewer waiting.
    page = site.open("/ui")
    before = int(page.locator("tr[data-pool='etl'] .waiting").inner_text())
    page.evaluate("window.__notReloaded = true")
    other = next(
        r
        for r in store.list_runs(POOL, queue="backfill")
        if r.state is StateType.SCHEDULED and r.scheduled_time <= utcnow()
    )
    cancel_run(store, other.id)
    expect(page.locator("tr[data-pool='etl'] .waiting")).to_have_text(str(before - 1), timeout=10_000)
    assert page.evaluate("window.__notReloaded") is True
