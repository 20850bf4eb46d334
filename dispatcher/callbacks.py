"""Run callbacks (SPEC §6): per-run tokens, and a signed report from a job moving its run.

A job learns its callback URL and token from `PUSHPOOL_CALLBACK_URL` / `PUSHPOOL_CALLBACK_TOKEN` and posts
`{"state": ..., "exit_code": ..., "message": ...}` signed with `signing.sign`. The token is derived, never
stored: a master secret -> a deployment secret -> the run's token, so a leaked token speaks for one run only.

Also here: `parse_json_body`, the one place an HTTP body becomes a request model (callbacks and `api.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import json_input, signing
from .cancelling import get_run
from .errors import Conflict, InvalidInput
from .models import FlowRun, utcnow, validation_sentence
from .states import TERMINAL, StateType
from .store.base import Store

SECRET_ENV = "PUSHPOOL_SECRET"
SECRET_SETTING = "callback_secret"
SAVE_ATTEMPTS = 5
"""Writes tried when the dispatcher or the reconciler moves the run between our read and our write."""
MAX_MESSAGE = 2000
_NO_DEPLOYMENT = "\x00no deployment"
"""Stands in for the deployment of an unknown run: no deployment id can contain NUL, so no token matches."""

M = TypeVar("M", bound=BaseModel)


class MalformedJson(InvalidInput):
    """A body that is not JSON at all: a client bug (400), unlike a well-formed body that breaks a rule (422)."""

    http_status = 400


# request bodies -------------------------------------------------------------------------------------------
def parse_json_body(model: type[M], body: bytes, what: str = "request body") -> M:
    """Validate a JSON body against a request model; the error is one sentence naming the field.

    Request models are strict with extra="forbid": a typo'd field or a "5" for a number is refused rather
    than guessed at, and nothing is written. NaN, Infinity and 1e999 are refused too (400): pydantic's parser
    takes them, but they are not JSON numbers, and stored they would come back as null.
    """
    try:
        parsed = model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "json_invalid":
            reason = err.get("ctx", {}).get("error", err["msg"])
            raise MalformedJson(f"the {what} is not valid JSON ({reason}).") from None
        if not field:
            raise InvalidInput(f"the {what} must be a JSON object, got {type(err['input']).__name__}.") from None
        if kind == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            raise InvalidInput(f"unknown field {field!r} in the {what}; allowed fields are: {allowed}.") from None
        if kind == "missing":
            raise InvalidInput(f"{field} is required in the {what}.") from None
        if kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            raise InvalidInput(f"{field} must be {expected}, got {err['input']!r}.") from None
        raise InvalidInput(validation_sentence(exc, what)) from None
    json_input.refuse_non_finite(parsed.model_dump(), f"the {what}", error=MalformedJson)
    return parsed


class CallbackBody(BaseModel):
    """What a job reports about its own run."""

    model_config = ConfigDict(extra="forbid", strict=True)

    state: Literal["RUNNING", "COMPLETED", "FAILED"]
    exit_code: int | None = None
    message: str | None = Field(default=None, max_length=MAX_MESSAGE)


# tokens ---------------------------------------------------------------------------------------------------
def master_secret(store: Store) -> bytes:
    """The secret every run token derives from: `PUSHPOOL_SECRET`, else one generated once and kept in the store.

    `setting_default` is a conditional put, so two dispatchers starting together agree on one secret.
    """
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    return store.setting_default(SECRET_SETTING, secrets.token_hex(32)).encode()


def deployment_secret(secret: bytes, deployment_id: str) -> bytes:
    """Per deployment, so a secret handed to one deployment's platform signs nothing for another."""
    return hmac.new(secret, f"deployment:{deployment_id}".encode(), hashlib.sha256).digest()


def run_token(secret: bytes, deployment_id: str, run_id: str) -> str:
    """The token a run's job signs its callbacks with (`PUSHPOOL_CALLBACK_TOKEN`)."""
    return hmac.new(deployment_secret(secret, deployment_id), run_id.encode(), hashlib.sha256).hexdigest()


def callback_url(base_url: str, run_id: str) -> str:
    """Where a run's job posts its callbacks (`PUSHPOOL_CALLBACK_URL`)."""
    return f"{base_url.rstrip('/')}/callbacks/runs/{run_id}"


# applying a callback --------------------------------------------------------------------------------------
def _source(digest: str) -> str:
    # The history records which signed message moved the run, which is also how a replay is recognised.
    return f"callback:{digest[:16]}"


def _proposed(run: FlowRun, body: CallbackBody, source: str, now: datetime) -> FlowRun:
    state = StateType(body.state)
    message = body.message or (f"exit code {body.exit_code}" if body.exit_code is not None else None)
    if run.state is StateType.CANCELLING and state in TERMINAL:
        # The job ended while we were stopping it: a cancel the user asked for ends CANCELLED, whatever
        # exit the stop caused (the job's own words are kept in the message).
        message = f"ended while cancelling: {state.value}" + (f", {message}" if message else "")
        state = StateType.CANCELLED
    after, _ = run.moved(state, source=source, message=message, now=now)
    return after


def _verified(store: Store, run_id: str, body: bytes, signature: str | None, now: datetime) -> tuple[FlowRun, str]:
    """The run whose token signed `body`, and the signature's digest; SignatureError (401) otherwise."""
    secret = master_secret(store)
    run = store.get_run(run_id)
    if run is None:
        # An unknown run is answered exactly as a bad signature, so run ids cannot be probed: the header is
        # checked against a token no caller can hold, which fails the way this header fails (missing,
        # malformed, stale or not matching), with the same words and about the same work.
        signing.verify(run_token(secret, _NO_DEPLOYMENT, run_id), body, signature, now.timestamp())
        raise signing.SignatureError(signing.MISMATCH)
    return run, signing.verify(run_token(secret, run.deployment_id, run.id), body, signature, now.timestamp())


def run_parameters(store: Store, run_id: str, signature: str | None, *, now: datetime | None = None) -> bytes:
    """A run's parameters as the JSON the store holds, for its own job: signed with the run's token over
    `PARAMETERS_SIGNED_BODY`.

    This is how parameters too large for the job's environment reach it (PUSHPOOL_PARAMETERS_URL, read by
    `pushpool-run`). The same refusals as a callback (401, the same for an unknown run); reading changes
    nothing, so a repeat within the signature's 300 s is fine.
    """
    run, _ = _verified(store, run_id, signing.PARAMETERS_SIGNED_BODY, signature, now or utcnow())
    return store.run_parameters(run)


def apply_callback(
    store: Store, run_id: str, body: bytes, signature: str | None, *, now: datetime | None = None
) -> FlowRun:
    """Verify a run's callback and record it; returns the run as stored.

    Refused with nothing changed: a missing, wrong or stale signature, an unknown run (the same answer, so
    an unauthenticated caller cannot tell which run ids exist) and a replay of a message already recorded
    (SignatureError, 401), a body that breaks the contract (InvalidInput). The
    signature is checked before the body is even parsed, so an unauthenticated caller learns nothing of it.
    Duplicate, stale and out-of-order reports are accepted and recorded as no-ops (SPEC §2).
    """
    now = now or utcnow()
    run, digest = _verified(store, run_id, body, signature, now)
    source = _source(digest)
    report = parse_json_body(CallbackBody, body, "callback body")
    for _ in range(SAVE_ATTEMPTS):
        if run.has_report(source):
            raise signing.SignatureError("callback already received (replay)")
        after = _proposed(run, report, source, now).remembering(source)
        if store.save_run(run, after):
            return after.model_copy(update={"version": run.version + 1})
        run = get_run(store, run_id)
    raise Conflict(f"flow run {run_id} kept changing while the callback was applied; send it again")
