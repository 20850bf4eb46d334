"""The Lambda dispatcher's Modal credentials: read from Secrets Manager (moto's server) before a modal:push
provider is first built, never for other pool types, never logged."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from ecs_fakes import AWS_TEST_ENV, AWS_UNSET, REGION, MotoServer

import handlers.aws_lambda as aws_lambda
from dispatcher.errors import ConfigError
from dispatcher.providers.modal import ModalProvider

TOKEN = {"token_id": "ak-test-id", "token_secret": "as-test-secret-value"}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def secrets(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from aws_lambda_powertools.utilities.parameters import constants

    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    for key in AWS_UNSET:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.setenv(key, "")  # restored (unset) after the test, whatever load_modal_token writes
        monkeypatch.delenv(key)
    # powertools keeps one Secrets Manager client per process (in a dict its modules share): make it anew for
    # this test's moto server, and give the earlier one back afterwards.
    earlier = constants.DEFAULT_PROVIDERS.pop("secrets", None)
    yield boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)
    constants.DEFAULT_PROVIDERS.pop("secrets", None)
    if earlier is not None:
        constants.DEFAULT_PROVIDERS["secrets"] = earlier


def test_the_modal_token_is_read_only_when_a_modal_pool_is_first_dispatched(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"pushpool/modal-token-{uuid.uuid4().hex[:6]}"
    secrets.create_secret(Name=name, SecretString=json.dumps(TOKEN))
    monkeypatch.setenv(aws_lambda.MODAL_TOKEN_SECRET_ENV, name)
    providers = aws_lambda.LambdaProviders()

    providers.get("process")
    assert "MODAL_TOKEN_ID" not in os.environ, "other pool types never read the Modal secret"
    with caplog.at_level(logging.INFO):  # botocore's own DEBUG records show response bodies: not ours
        provider = providers.get("modal:push")
    assert isinstance(provider, ModalProvider)
    assert (os.environ["MODAL_TOKEN_ID"], os.environ["MODAL_TOKEN_SECRET"]) == (
        TOKEN["token_id"],
        TOKEN["token_secret"],
    )
    assert TOKEN["token_secret"] not in caplog.text


def test_a_token_in_the_environment_wins_and_a_missing_secret_leaves_modal_s_own_lookup(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(aws_lambda.MODAL_TOKEN_SECRET_ENV, "pushpool/no-such-secret")
    with caplog.at_level(logging.WARNING):
        aws_lambda.load_modal_token()
    assert "MODAL_TOKEN_ID" not in os.environ
    assert "pushpool/no-such-secret could not be read" in caplog.text

    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-env")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-env")
    aws_lambda.load_modal_token()
    assert os.environ["MODAL_TOKEN_ID"] == "ak-env"


def test_a_secret_that_is_not_a_token_is_a_config_error_in_words(secrets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pushpool/not-json-{uuid.uuid4().hex[:6]}"
    secrets.create_secret(Name=name, SecretString="as-just-the-secret")
    monkeypatch.setenv(aws_lambda.MODAL_TOKEN_SECRET_ENV, name)
    with pytest.raises(ConfigError, match=f"the Modal token secret {name} must be JSON") as caught:
        aws_lambda.load_modal_token()
    assert "as-just-the-secret" not in str(caught.value)
    other = f"pushpool/half-{uuid.uuid4().hex[:6]}"
    secrets.create_secret(Name=other, SecretString=json.dumps({"token_id": "ak-1"}))
    monkeypatch.setenv(aws_lambda.MODAL_TOKEN_SECRET_ENV, other)
    with pytest.raises(ConfigError, match="must hold token_id and token_secret"):
        aws_lambda.load_modal_token()
    assert "MODAL_TOKEN_ID" not in os.environ
