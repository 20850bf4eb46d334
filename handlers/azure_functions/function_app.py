"""The Azure Functions app (Python v2 programming model), thin: parse the trigger, call the core, shape the reply.

- `dispatch`: a timer, every minute -> one dispatch pass. The pass is also the ACI watcher: its reconciler
  reads the container groups' instance views, stops what was cancelled and deletes what ended.
- `http`: every route -> the callback route and the management API of `dispatcher.api`, exactly as the Lambda
  handler and `pushpool serve` answer them (the callback's signature is checked by the core, the management
  routes need `Authorization: Bearer $PUSHPOOL_API_TOKEN`).

The store URL and the rest come from the app settings, which Functions hands over as environment variables
(docs/deploy.md lists them). The store, the dispatcher and the API are built on first use and kept for warm
invocations; the Azure SDK is imported only when an ACI pool's provider first calls Azure.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import azure.functions as func

if TYPE_CHECKING:
    from dispatcher.api import Api
    from dispatcher.dispatch import Dispatcher
    from dispatcher.store.base import Store

log = logging.getLogger("pushpool.azure_functions")

DISPATCH_SCHEDULE = "0 */1 * * * *"
"""NCRONTAB (with seconds): a pass a minute; overlapping passes are safe, admission being atomic in the store."""


class Runtime:
    """What a warm Functions instance keeps between invocations, each part built from the app settings on first use."""

    @cached_property
    def store(self) -> Store:
        from dispatcher.store import open_store

        return open_store()

    @cached_property
    def dispatcher(self) -> Dispatcher:
        from dispatcher.dispatch import Dispatcher

        return Dispatcher(self.store)

    @cached_property
    def api(self) -> Api:
        from dispatcher.api import API_TOKEN_ENV, Api

        return Api(self.store, api_token=os.environ.get(API_TOKEN_ENV) or None)

    def close(self) -> None:
        """Release what was built (the dispatcher's threads, the store's connections)."""
        if "dispatcher" in self.__dict__:
            self.dispatcher.close()
        if "store" in self.__dict__:
            self.store.close()


runtime = Runtime()


def reset_runtime() -> Runtime:
    """Close what the instance kept and start again from the app settings (tests, or after a settings change)."""
    global runtime
    old, runtime = runtime, Runtime()
    old.close()
    return runtime


# Anonymous at the Functions layer: the callback route is authenticated by its signature, the management API by
# its bearer token, both in dispatcher.api, the same as behind API Gateway or `pushpool serve`.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.timer_trigger(arg_name="timer", schedule=DISPATCH_SCHEDULE, run_on_startup=False, use_monitor=True)
def dispatch(timer: func.TimerRequest) -> None:
    """One dispatch pass per tick; a tick that comes late (`past_due`) runs the pass all the same."""
    summary = runtime.dispatcher.run_pass()
    log.info(
        "dispatch pass: %s",
        summary.headline(),
        extra={"summary": json.dumps(summary.as_dict()), "late": timer.past_due},
    )
    for run_id, why in summary.crashed.items():
        log.error("run %s crashed before it ran: %s", run_id, why)
    for what, why in summary.problems.items():
        log.warning("dispatch problem with %s: %s", what, why)


@app.route(route="{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def http(req: func.HttpRequest) -> func.HttpResponse:
    """The callback route and the management API (host.json sets no route prefix, so paths are as documented)."""
    from dispatcher.api import Request

    # The path as sent, still percent-encoded; the body as the exact bytes the callback's signature covers.
    url = urlsplit(req.url)
    path = url.path or "/"
    response = runtime.api.handle(
        Request(
            method=req.method,
            path=path,
            headers=dict(req.headers),
            query=dict(req.params),
            body=req.get_body(),
            scheme=url.scheme or "https",
        )
    )
    log.info("http %s %s -> %s", req.method, path, response.status)
    headers = response.all_headers()
    # The worker takes the body's type from `mimetype` (text/plain unless told): the API's JSON, the dashboard's HTML.
    mimetype = headers.get("Content-Type", "text/plain").split(";")[0]
    return func.HttpResponse(body=response.encoded(), status_code=response.status, headers=headers, mimetype=mimetype)
