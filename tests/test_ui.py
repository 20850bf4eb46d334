"""The dashboard's routes, sign-in and CSRF checks through `Api.handle`, as every adapter calls it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from dispatcher import deployments, pools
from dispatcher.api import Api, Request, Response
from dispatcher.cancelling import cancel_run
from dispatcher.errors import InvalidInput
from dispatcher.models import utcnow
from dispatcher.providers.console import console_url
from dispatcher.states import StateType
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.ui import auth, views
from dispatcher.wakeups import LIMIT_RAISED, POOL_RESUMED, RUN_CREATED, RecordedWakeups

TOKEN = "ui-unit-token-0123456789"
HOST = "127.0.0.1:4300"
ORIGIN = f"http://{HOST}"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "s.db"))
    pools.create_pool(store, "etl", concurrency_limit=3, description="<script>alert(1)</script>")
    pools.create_queue(store, "etl", "critical", priority=1, concurrency_limit=1)
    deployments.create_deployment(store, "load", pool="etl", job_variables={"command": "echo hi"})
    return store


@pytest.fixture
def api(store: SQLiteStore) -> Api:
    return Api(store, api_token=TOKEN)


def get(api: Api, path: str, cookie: str | None = None, **headers: str) -> Response:
    path, _, query = path.partition("?")
    params = dict(pair.split("=", 1) for pair in query.split("&")) if query else {}
    all_headers = {"host": HOST, **headers, **({"cookie": cookie} if cookie else {})}
    return api.handle(Request("GET", path, all_headers, params))


def post(api: Api, path: str, form: dict[str, str], cookie: str | None = None, **headers: str) -> Response:
    all_headers = {"host": HOST, "origin": ORIGIN, "content-type": FORM, **headers}
    if cookie:
        all_headers["cookie"] = cookie
    return api.handle(Request("POST", path, all_headers, body=urlencode(form).encode()))


def text(response: Response) -> str:
    return response.encoded().decode()


def sign_in(api: Api) -> tuple[str, str]:
    """(Cookie header, CSRF token) of a fresh session."""
    response = post(api, "/ui/login", {"token": TOKEN, "next": "/ui"})
    assert response.status == 303
    cookie = response.headers["Set-Cookie"].split(";")[0]
    page = get(api, "/ui", cookie)
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', text(page))
    assert match, "every signed-in page carries the CSRF token in its forms"
    return cookie, match.group(1)


# sign-in ------------------------------------------------------------------------------------------------------
def test_every_page_but_login_and_static_files_redirects_to_the_login_form(api: Api) -> None:
    for path in ("/ui", "/ui/pools/etl", "/ui/runs", "/ui/runs/nope"):
        response = get(api, path)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/ui/login?next=")
    assert get(api, "/ui/login").status == 200
    css = get(api, "/ui/static/app.css")
    assert css.status == 200 and css.all_headers()["Content-Type"].startswith("text/css")
    assert get(api, "/ui/static/..%2Fauth.py").status == 404
    assert get(api, "/ui/static/auth.py").status == 404


def test_signing_in_sets_a_derived_http_only_strict_cookie(api: Api) -> None:
    response = post(api, "/ui/login", {"token": TOKEN, "next": "/ui/pools/etl"})
    assert response.status == 303 and response.headers["Location"] == "/ui/pools/etl"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http on a loopback host: `pushpool serve` on 127.0.0.1
    assert TOKEN not in cookie
    https = api.handle(
        Request(
            "POST",
            "/ui/login",
            {"host": "pushpool.example.com", "origin": "https://pushpool.example.com", "content-type": FORM},
            body=urlencode({"token": TOKEN}).encode(),
            scheme="https",
        )
    )
    assert https.status == 303 and "; Secure" in https.headers["Set-Cookie"]


def test_a_wrong_token_a_foreign_next_and_plain_http_from_elsewhere_are_refused(api: Api) -> None:
    wrong = post(api, "/ui/login", {"token": "guess"})
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers and "Wrong token" in text(wrong)
    foreign = post(api, "/ui/login", {"token": TOKEN, "next": "//evil.example.com/ui"})
    assert foreign.headers["Location"] == "/ui"
    plain = post(api, "/ui/login", {"token": TOKEN}, host="10.1.2.3:4300", origin="http://10.1.2.3:4300")
    assert plain.status == 403 and "Set-Cookie" not in plain.headers and "HTTPS" in text(plain)
    no_origin = api.handle(
        Request("POST", "/ui/login", {"host": HOST, "content-type": FORM}, body=urlencode({"token": TOKEN}).encode())
    )
    assert no_origin.status == 403 and "Set-Cookie" not in no_origin.headers


def test_a_tampered_or_expired_session_is_not_signed_in(api: Api) -> None:
    cookie, _ = sign_in(api)
    assert get(api, "/ui", cookie).status == 200
    name, _, value = cookie.partition("=")
    issued, _, mac = value.partition(".")
    flipped = mac[:-1] + ("1" if mac.endswith("0") else "0")
    assert get(api, "/ui", f"{name}={issued}.{flipped}").status == 303
    assert get(api, "/ui", f"{name}={int(issued) + 1}.{mac}").status == 303
    old = auth.new_session(TOKEN, now=0)
    assert get(api, "/ui", f"{name}={old}").status == 303
    assert not auth.valid_session("another-token", value)  # a rotated token ends every session


def test_signing_out_clears_the_cookie(api: Api) -> None:
    cookie, csrf = sign_in(api)
    response = post(api, "/ui/logout", {"csrf": csrf}, cookie)
    assert response.status == 303 and "Max-Age=0" in response.headers["Set-Cookie"]


def test_without_a_token_or_behind_iam_the_dashboard_says_why(store: SQLiteStore) -> None:
    disabled = get(Api(store, api_token=None), "/ui/login")
    assert disabled.status == 403 and "PUSHPOOL_API_TOKEN" in text(disabled)
    iam = get(Api(store, api_token=None, gateway_authorized=True), "/ui")
    assert iam.status == 404 and "pushpool serve" in text(iam)


# CSRF and actions ---------------------------------------------------------------------------------------------
def test_an_action_needs_the_cookie_the_csrf_token_and_this_origin(api: Api, store: SQLiteStore) -> None:
    cookie, csrf = sign_in(api)
    refused = [
        post(api, "/ui/pools/etl/pause", {"csrf": csrf}),  # no cookie
        post(api, "/ui/pools/etl/pause", {}, cookie),  # no CSRF token
        post(api, "/ui/pools/etl/pause", {"csrf": "0" * 64}, cookie),  # a wrong one
        post(api, "/ui/pools/etl/pause", {"csrf": csrf}, cookie, origin="https://evil.example.com"),
        post(api, "/ui/pools/etl/pause", {"csrf": csrf}, cookie, origin="null"),
    ]
    assert [r.status for r in refused] == [401, 403, 403, 403, 403]
    assert all("nothing was changed" in text(r).lower() for r in refused)
    assert store.get_pool("etl").paused is False  # type: ignore[union-attr]
    other_session = auth.new_session(TOKEN, now=auth.time.time() - 5)
    assert not auth.csrf_ok(TOKEN, other_session, csrf)  # a token belongs to its session
    done = post(api, "/ui/pools/etl/pause", {"csrf": csrf}, cookie)
    assert done.status == 303 and done.headers["Location"] == "/ui/pools/etl"
    assert store.get_pool("etl").paused is True  # type: ignore[union-attr]
    referer_only = api.handle(
        Request(
            "POST",
            "/ui/pools/etl/resume",
            {"host": HOST, "referer": f"{ORIGIN}/ui/pools/etl", "cookie": cookie, "content-type": FORM},
            body=urlencode({"csrf": csrf}).encode(),
        )
    )
    assert referer_only.status == 303 and store.get_pool("etl").paused is False  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["three", "-1", "1.5", "99999999999"])
def test_a_bad_limit_shows_the_core_sentence_and_writes_nothing(api: Api, store: SQLiteStore, value: str) -> None:
    cookie, csrf = sign_in(api)
    with pytest.raises(InvalidInput) as core:
        pools.limit_arg("concurrency_limit", int(value) if value.lstrip("-").isdigit() else value)  # type: ignore[arg-type]
    before = store.get_pool("etl")
    response = post(api, "/ui/pools/etl/limit", {"csrf": csrf, "limit": value}, cookie)
    assert response.status == 422
    assert f'id="error">{_escaped(str(core.value))}<' in text(response)
    assert store.get_pool("etl") == before


def _escaped(sentence: str) -> str:
    return sentence.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&#34;").replace("<", "&lt;")


def test_limits_pause_cancel_and_run_go_through_the_core(api: Api, store: SQLiteStore) -> None:
    cookie, csrf = sign_in(api)
    assert post(api, "/ui/pools/etl/queues/critical/limit", {"csrf": csrf, "limit": "4"}, cookie).status == 303
    assert store.get_queue("etl", "critical").concurrency_limit == 4  # type: ignore[union-attr]
    assert post(api, "/ui/pools/etl/limit", {"csrf": csrf, "limit": ""}, cookie).status == 303
    assert store.get_pool("etl").concurrency_limit is None  # type: ignore[union-attr]
    assert post(api, "/ui/pools/etl/queues/critical/pause", {"csrf": csrf}, cookie).status == 303
    assert store.get_queue("etl", "critical").paused is True  # type: ignore[union-attr]
    started = post(api, "/ui/deployments/load/run", {"csrf": csrf}, cookie)
    run_id = started.headers["Location"].rsplit("/", 1)[1]
    assert store.get_run(run_id).deployment == "load"  # type: ignore[union-attr]
    assert post(api, f"/ui/runs/{run_id}/cancel", {"csrf": csrf}, cookie).status == 303
    assert store.get_run(run_id).state is StateType.CANCELLED  # type: ignore[union-attr]
    again = post(api, f"/ui/runs/{run_id}/cancel", {"csrf": csrf}, cookie)
    assert again.status == 409 and "already CANCELLED" in text(again)


def test_actions_wake_a_pass_as_the_api_routes_do(store: SQLiteStore) -> None:
    wakeups = RecordedWakeups()
    api = Api(store, api_token=TOKEN, wakeups=wakeups)
    cookie, csrf = sign_in(api)
    post(api, "/ui/pools/etl/pause", {"csrf": csrf}, cookie)
    post(api, "/ui/pools/etl/limit", {"csrf": csrf, "limit": "2"}, cookie)  # lowered: nothing to wake for
    assert wakeups.calls == []
    post(api, "/ui/pools/etl/resume", {"csrf": csrf}, cookie)
    post(api, "/ui/pools/etl/queues/critical/limit", {"csrf": csrf, "limit": ""}, cookie)
    post(api, "/ui/pools/etl/limit", {"csrf": csrf, "limit": "three"}, cookie)  # refused: wakes nothing
    run_id = post(api, "/ui/deployments/load/run", {"csrf": csrf}, cookie).headers["Location"].rsplit("/", 1)[1]
    post(api, f"/ui/runs/{run_id}/cancel", {"csrf": csrf}, cookie)  # SCHEDULED -> CANCELLED frees no slot
    assert wakeups.calls == [("etl", POOL_RESUMED), ("etl", LIMIT_RAISED), ("etl", RUN_CREATED)]


def test_a_custom_run_takes_parameters_and_a_bad_object_writes_nothing(api: Api, store: SQLiteStore) -> None:
    cookie, csrf = sign_in(api)
    started = post(api, "/ui/deployments/load/run", {"csrf": csrf, "parameters": '{"day": "2026-12-01"}'}, cookie)
    run = store.get_run(started.headers["Location"].rsplit("/", 1)[1])
    assert run is not None and run.parameters == {"day": "2026-12-01"}
    for bad, words in [("[1, 2]", "got list"), ("{day:", "not valid JSON"), ('{"x": NaN}', "NaN")]:
        refused = post(api, "/ui/deployments/load/run", {"csrf": csrf, "parameters": bad}, cookie)
        assert refused.status in (400, 422) and words in text(refused), bad
    assert [r.id for r in store.runs_of_deployment("load")] == [run.id]


def test_unknown_pools_runs_and_queues_are_404_pages_that_name_them(api: Api) -> None:
    cookie, csrf = sign_in(api)
    pool = get(api, "/ui/pools/nope", cookie)
    assert pool.status == 404 and "work pool &#39;nope&#39; does not exist" in text(pool)
    run = get(api, "/ui/runs/0000-missing", cookie)
    assert run.status == 404 and "flow run &#39;0000-missing&#39; does not exist" in text(run)
    queue = post(api, "/ui/pools/etl/queues/nope/pause", {"csrf": csrf}, cookie)
    assert queue.status == 404 and "nope" in text(queue)
    assert get(api, "/ui/nothing-here", cookie).status == 404
    assert post(api, "/ui/runs/x", {"csrf": csrf}, cookie).status == 405


# pages --------------------------------------------------------------------------------------------------------
def test_pages_escape_what_users_wrote(api: Api) -> None:
    cookie, _ = sign_in(api)
    page = text(get(api, "/ui", cookie))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_an_unchanged_page_answers_304_to_its_etag(api: Api, store: SQLiteStore) -> None:
    cookie, _ = sign_in(api)
    first = get(api, "/ui/pools/etl", cookie)
    etag = first.headers["ETag"]
    again = get(api, "/ui/pools/etl", cookie, **{"if-none-match": etag})
    assert again.status == 304 and again.encoded() == b"" and again.headers["ETag"] == etag
    deployments.run_deployment(store, "load", scheduled_time=utcnow() + timedelta(minutes=5))
    changed = get(api, "/ui/pools/etl", cookie, **{"if-none-match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag


def test_a_live_poll_gets_the_page_fragment_only(api: Api) -> None:
    cookie, _ = sign_in(api)
    full = get(api, "/ui/pools/etl", cookie)
    live = get(api, "/ui/pools/etl", cookie, **{"x-pushpool-live": "1"})
    assert live.status == 200 and live.headers["Vary"] == "X-Pushpool-Live"
    fragment = text(live)
    assert "<html" not in fragment and "<header" not in fragment and len(fragment) < len(text(full))
    for section in ("summary", "queues", "waterfall", "upcoming", "timeline"):
        assert f'data-live="{section}"' in fragment
    again = get(api, "/ui/pools/etl", cookie, **{"x-pushpool-live": "1", "if-none-match": live.headers["ETag"]})
    assert again.status == 304


def test_every_page_sends_a_strict_content_security_policy(api: Api) -> None:
    cookie, _ = sign_in(api)
    for path in ("/ui", "/ui/login", "/ui/pools/etl", "/ui/runs"):
        headers = get(api, path, cookie).headers
        assert (
            "script-src 'self'" in headers["Content-Security-Policy"]
            and "frame-ancestors 'none'" in (headers["Content-Security-Policy"])
        )


def _next_link(page: str) -> str | None:
    match = re.search(r'<a href="(/ui/runs\?[^"]*)" rel="next">', page)
    return match.group(1).replace("&amp;", "&") if match else None


def test_the_runs_list_pages_by_cursor_and_filters(api: Api, store: SQLiteStore) -> None:
    cookie, _ = sign_in(api)
    now = utcnow()
    made = [deployments.run_deployment(store, "load", scheduled_time=now + timedelta(minutes=i)) for i in range(30)]
    late = deployments.run_deployment(store, "load", scheduled_time=now - timedelta(minutes=5))
    first = text(get(api, "/ui/runs?pool=etl", cookie))
    ids = re.findall(r'<tr data-run="([^"]+)"', first)
    assert ids == [r.id for r in reversed(made)][: views.PAGE_SIZE]  # newest scheduled first
    link = _next_link(first)
    assert link is not None and "pool=etl" in link and 'rel="first"' not in first
    second = text(get(api, link, cookie))
    assert re.findall(r'<tr data-run="([^"]+)"', second) == [r.id for r in reversed(made)][views.PAGE_SIZE :] + [
        late.id
    ]
    assert _next_link(second) is None and 'rel="first"' in second
    assert re.search(rf'data-run="{late.id}">.*?data-state="SCHEDULED">Late<', second, re.S)
    assert text(get(api, "/ui/runs?state=COMPLETED", cookie)).count('<tr data-run="') == 0
    assert text(get(api, "/ui/runs?deployment=load&state=SCHEDULED", cookie)).count('<tr data-run="') == 25
    bad = get(api, "/ui/runs?state=DONE", cookie)
    assert bad.status == 422 and "query parameter state must be one of" in text(bad)
    assert get(api, "/ui/runs?queue=critical", cookie).status == 422
    forged = get(api, "/ui/runs?cursor=not-a-cursor", cookie)
    assert forged.status == 422 and "cursor is not one pushpool gave" in text(forged)
    assert get(api, "/ui/runs?page=2", cookie).status == 422
    assert get(api, "/ui/runs?deployment=nope", cookie).status == 404


def test_a_run_page_shows_the_masked_job(api: Api, store: SQLiteStore) -> None:
    cookie, _ = sign_in(api)
    run = deployments.run_deployment(store, "load")
    page = text(get(api, f"/ui/runs/{run.id}", cookie))
    assert run.id in page and "PUSHPOOL_CALLBACK_TOKEN&#34;: &#34;****&#34;" in page
    logs = text(get(api, f"/ui/runs/{run.id}/logs", cookie))
    assert "nothing was submitted" in logs


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ({}, "has no base job template"),
        ({"job_configuration": {}, "variables": {}}, "has no base job template"),
        ({"job_configuration": {"command": "{{ command }}"}}, "this pool declares no variables"),
    ],
    ids=["empty", "empty-job", "no-variables"],
)
def test_a_run_page_of_a_pool_without_a_template_says_there_is_no_job(
    api: Api, store: SQLiteStore, template: dict[str, object], why: str
) -> None:
    cookie, _ = sign_in(api)
    run = deployments.run_deployment(store, "load")
    pool = store.get_pool("etl")
    assert pool is not None
    store.update_pool(pool.model_copy(update={"base_job_template": template}))  # valid for the model
    response = get(api, f"/ui/runs/{run.id}", cookie)
    assert response.status == 200
    page = text(response)
    assert why in page and 'id="job"' not in page
    assert get(api, "/ui/pools/etl", cookie).status == 200


def test_pages_of_unusual_but_valid_store_contents_answer(api: Api, store: SQLiteStore) -> None:
    cookie, _ = sign_in(api)
    gone = deployments.run_deployment(store, "load")
    cancel_run(store, gone.id)
    deployments.delete_deployment(store, "load")  # its runs stay
    page = text(get(api, f"/ui/runs/{gone.id}", cookie))
    assert "load (deleted)" in page and "/ui/runs?deployment=load" not in page  # no link to a 404
    assert "deployment &#39;load&#39; does not exist" in page  # the job section says why nothing is rendered

    pools.create_pool(store, "bare", paused=True)
    deployments.create_deployment(store, "quiet", pool="bare", job_variables={"command": "echo hi"})
    bare = deployments.run_deployment(store, "quiet")
    stored = store.get_run(bare.id)
    assert stored is not None
    assert store.save_run(stored, stored.model_copy(update={"state_history": []}))  # a run with no history
    pools.create_queue(store, "bare", "side", priority=2)
    deployments.create_deployment(store, "sider", pool="bare", queue="side", job_variables={"command": "echo"})
    orphan = deployments.run_deployment(store, "sider")
    cancel_run(store, orphan.id)
    deployments.delete_deployment(store, "sider")
    store.delete_queue("bare", "side")  # a run whose queue is gone
    paths = ("/ui", "/ui/runs", "/ui/pools/bare", "/ui/runs?pool=bare", f"/ui/runs/{bare.id}", f"/ui/runs/{orphan.id}")
    for path in paths:
        assert get(api, path, cookie).status == 200, path


# console links ------------------------------------------------------------------------------------------------
def test_console_urls_are_formed_from_each_providers_infrastructure_id() -> None:
    assert console_url("ecs:push", "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc123") == (
        "https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/prod/tasks/abc123/configuration?region=eu-west-1"
    )
    assert "clusters/mine/tasks/abc" in (console_url("ecs:push", "mine|arn:aws:ecs:us-east-1:1:task/abc") or "")
    assert console_url("cloud-run-v2:push", "creds.json|projects/p/locations/europe-west1/jobs/j/executions/e1") == (
        "https://console.cloud.google.com/run/jobs/executions/details/europe-west1/e1/tasks?project=p"
    )
    group = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g"
    assert console_url("azure-container-instance:push", group) == f"https://portal.azure.com/#resource{group}/overview"
    assert console_url("modal:push", "team/sb-AbC123") == "https://modal.com/id/sb-AbC123"
    assert console_url("process", "abc") is None
    assert console_url("ecs:push", "not-an-arn") is None
    assert console_url("azure-container-instance:push", "/subscriptions/s") is None


def test_runs_of_a_deleted_deployment_or_removed_queue_are_still_listed_with_a_note(
    api: Api, store: SQLiteStore
) -> None:
    cookie, _ = sign_in(api)
    deployments.create_deployment(store, "urgent", pool="etl", queue="critical", job_variables={"command": "x"})
    left = deployments.run_deployment(store, "urgent")
    cancel_run(store, left.id)  # SCHEDULED -> CANCELLED at once: nothing holds the queue any more
    other = deployments.run_deployment(store, "load")
    deployments.delete_deployment(store, "urgent")
    pools.delete_queue(store, "etl", "critical")
    for path, sentence in [
        ("/ui/runs?deployment=urgent", "Deployment &#39;urgent&#39; no longer exists"),
        ("/ui/runs?pool=etl&queue=critical", "Queue &#39;critical&#39; no longer exists in pool &#39;etl&#39;"),
    ]:
        response = get(api, path, cookie)
        assert response.status == 200, path
        page = text(response)
        assert re.findall(r'<tr data-run="([^"]+)"', page) == [left.id], path  # its run, not the other's
        assert sentence in page and "the runs it left are listed" in page
    # A state filter that matches none of them still answers the page, with the note.
    filtered = get(api, "/ui/runs?deployment=urgent&state=RUNNING", cookie)
    assert filtered.status == 200 and "no longer exists" in text(filtered) and "No flow run matches" in text(filtered)
    # A name that nothing names (no deployment, queue nor run) is still a 404 naming it; live ones have no note.
    assert get(api, "/ui/runs?deployment=nope", cookie).status == 404
    missing_queue = get(api, "/ui/runs?pool=etl&queue=nope", cookie)
    assert missing_queue.status == 404 and "work queue &#39;nope&#39; does not exist" in text(missing_queue)
    assert get(api, "/ui/runs?pool=gone&queue=critical", cookie).status == 404
    live = text(get(api, "/ui/runs?deployment=load", cookie))
    assert re.findall(r'<tr data-run="([^"]+)"', live) == [other.id] and "no longer exists" not in live
