"""Signing and verifying run callbacks (SPEC §6): `X-Pushpool-Signature: t=<unix>,v1=<hex>`.

The digest is HMAC-SHA256 of `"<t>." + body`, keyed with the run's token. Putting the timestamp inside
the signed text binds it to the body, so a captured request cannot be replayed later with a fresh `t`;
the tolerance window bounds how long a captured request stays usable at all.

Pure and stdlib-only: the runner (`pushpool-run`) imports this module inside job images, where pulling in
pydantic or a cloud SDK would slow every start.
"""

from __future__ import annotations

import hashlib
import hmac

from dispatcher.errors import PushpoolError

__all__ = ["SIGNATURE_HEADER", "TOLERANCE_SECONDS", "SignatureError", "sign", "verify"]

SIGNATURE_HEADER = "X-Pushpool-Signature"
TOLERANCE_SECONDS = 300
"""How far a signature's timestamp may be from the verifier's clock, either way, in seconds."""

_HEX_DIGITS = frozenset("0123456789abcdef")
MISMATCH = f"the {SIGNATURE_HEADER} signature does not match the body and the run's token."
"""The refusal of a well-formed, fresh signature that is wrong (also what an unknown run gets)."""


class SignatureError(PushpoolError):
    """A callback whose signature is missing, malformed, stale or wrong; the request changes nothing."""

    http_status = 401


PARAMETERS_ENV = "PUSHPOOL_PARAMETERS"
PARAMETERS_URL_ENV = "PUSHPOOL_PARAMETERS_URL"
"""A job's parameters travel in PARAMETERS_ENV, or, when too large for its environment, by reference in
PARAMETERS_URL_ENV (the job's callback URL + PARAMETERS_PATH), which `pushpool-run` reads for the command."""
PARAMETERS_PATH = "/parameters"
"""Appended to a run's callback URL: where its job reads parameters too large to travel in its environment."""
PARAMETERS_FILE_ENV = "PUSHPOOL_PARAMETERS_FILE"
"""Where `pushpool-run` puts parameters fetched by reference that are too large for one environment variable:
a file (0600, in a private temporary directory) holding their JSON, named by this variable."""
PARAMETERS_ENV_MAX_BYTES = 120 * 1024
"""The most JSON a job gets in PARAMETERS_ENV: Linux takes at most 131,072 bytes (MAX_ARG_STRLEN) for one
`NAME=value` of an environment; larger parameters come as PARAMETERS_FILE_ENV (by reference) or not at all."""
PARAMETERS_SIGNED_BODY = b"GET parameters"
"""What a job signs to read its parameters: a body no callback can have, so neither signature serves the other."""


def _digest(token: str, body: bytes, timestamp: int) -> str:
    return hmac.new(token.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(token: str, body: bytes, timestamp: int) -> str:
    """The `X-Pushpool-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(token, body, timestamp)}"


def verify(token: str, body: bytes, header: str | None, now: float) -> str:
    """Check a signature header against `body` and the clock `now` (unix seconds); return the v1 digest.

    Several `v1=` entries are accepted and any one may match, so a sender can sign with an old and a new
    token while a token is being rotated. Raises `SignatureError` naming what is wrong.
    """
    if header is None or not header.strip():
        raise SignatureError(f"the {SIGNATURE_HEADER} header is missing; sign the callback with the run's token.")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"the {SIGNATURE_HEADER} header is malformed; expected t=<unix>,v1=<hex>.")
        if key == "t":
            # isdigit() alone accepts non-ASCII digits such as "²", which int() then rejects.
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                raise SignatureError(f"the {SIGNATURE_HEADER} header has a bad timestamp; expected t=<unix seconds>.")
            timestamp = int(value)
        elif key == "v1":
            value = value.lower()  # hex is case-insensitive; hexdigest() on our side is lower case
            if len(value) != 64 or not set(value) <= _HEX_DIGITS:
                raise SignatureError(f"the {SIGNATURE_HEADER} header has a bad v1 digest; expected 64 hex digits.")
            candidates.append(value)
        # Other keys (a future v2 scheme, say) are ignored so senders can add them before verifiers know them.
    if timestamp is None or not candidates:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is malformed; expected t=<unix>,v1=<hex>.")
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(
            f"the {SIGNATURE_HEADER} timestamp is more than {TOLERANCE_SECONDS} s from the server's clock; "
            f"check the sender's clock and resend."
        )
    expected = _digest(token, body, timestamp)
    # Compare every candidate, without stopping early, so the timing says nothing about which one failed.
    matched = [candidate for candidate in candidates if hmac.compare_digest(candidate, expected)]
    if not matched:
        raise SignatureError(MISMATCH)
    return matched[0]
