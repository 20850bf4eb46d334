"""The DynamoDB table of pushpool, as one structure: `pushpool store init` creates it from `TABLE`, and the
deploy files (SAM / Serverless) are to be checked against it, so the code and the infrastructure cannot drift.

Single-table design (docs/dynamodb.md has the access pattern of every Store method):

=================  ======================  ============  =============================================
item               pk                      sk            other attributes
=================  ======================  ============  =============================================
setting            ``SETTING#<key>``       ``SETTING``   value
pool               ``POOLS``               ``<pool>``    data
pool heartbeat     ``POOL#<pool>``         ``#POLLED``   polled, ``q:<queue>`` (last_polled stamps)
queue              ``POOL#<pool>``         ``QUEUE#<q>`` data, priority
deployment         ``DEPLOYMENTS``         ``<name>``    data, dep_pool, sched (sparse)
slot               ``SLOT#<slot key>``     ``SLOT``      lim (absent = unlimited), active
run                ``RUN#<id>``            ``RUN``       data, state, version, queue, run_pool, run_dep,
                                                         rsk, due_pk/due_sk (sparse), active_pk/active_sk
                                                         (sparse), expires (TTL, finished runs only)
run parameters     ``RUN#<id>``            ``PARAMS#n``  chunk (binary), expires (TTL, finished runs only)
=================  ======================  ============  =============================================

A run's parameters over `models.PARAMETERS_APART_BYTES` live in its partition as chunks of at most
PARAMETERS_CHUNK_BYTES (``PARAMS#0000``, ``PARAMS#0001``, ...), written with the run and never rewritten: the
run item, rewritten at every state change and carried by admission transactions and the due/active indexes,
holds only their size.

This module imports nothing from boto3: it is plain data.
"""

from __future__ import annotations

import copy
from typing import Any

# attribute names ---------------------------------------------------------------------------------------------
PK, SK = "pk", "sk"
DATA = "data"
TTL_ATTRIBUTE = "expires"
CHUNK = "chunk"
PARAMETERS_PREFIX = "PARAMS#"
PARAMETERS_CHUNK_BYTES = 256 * 1024
"""Bytes of run parameters per item: well under DynamoDB's 400 KB item, so a 512 KB set takes two items. Part of
the layout: the chunk count of a run follows from its `parameters_size`."""

# index names -------------------------------------------------------------------------------------------------
DUE_INDEX = "due"
"""Sparse: SCHEDULED runs only. Partition `<pool>/<queue>`, sort `<scheduled ts>#<run id>`."""
ACTIVE_INDEX = "active"
"""Sparse: PENDING, RUNNING and CANCELLING runs only. Partition pool, sort run id."""
RUNS_BY_POOL_INDEX = "runs_by_pool"
"""Every run. Partition pool, sort `<inverted scheduled ts>#<run id>` (newest first, ties by id)."""
RUNS_BY_DEPLOYMENT_INDEX = "runs_by_deployment"
"""Every run. Partition deployment name, sort as runs_by_pool."""
DEPLOYMENTS_BY_POOL_INDEX = "deployments_by_pool"
"""Every deployment. Partition pool, sort name (the base table's sk)."""
SCHEDULED_DEPLOYMENTS_INDEX = "scheduled_deployments"
"""Sparse: deployments with schedules that are not paused. One partition `SCHEDULED`, sort name."""

_S = "S"


def _gsi(name: str, hash_key: str, range_key: str, projection: dict[str, Any]) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        "Projection": projection,
    }


TABLE: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": _S}
        for name in (
            PK,
            SK,
            "due_pk",
            "due_sk",
            "active_pk",
            "active_sk",
            "run_pool",
            "run_dep",
            "rsk",
            "dep_pool",
            "sched",
        )
    ],
    "KeySchema": [
        {"AttributeName": PK, "KeyType": "HASH"},
        {"AttributeName": SK, "KeyType": "RANGE"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
    "GlobalSecondaryIndexes": [
        # The dispatch path reads these two; they carry the run's JSON so a query needs no GetItem after it.
        _gsi(DUE_INDEX, "due_pk", "due_sk", {"ProjectionType": "INCLUDE", "NonKeyAttributes": [DATA]}),
        _gsi(ACTIVE_INDEX, "active_pk", "active_sk", {"ProjectionType": "INCLUDE", "NonKeyAttributes": [DATA]}),
        # Listings: keys (plus the two filterable fields) only, so a state change rewrites no JSON here.
        _gsi(
            RUNS_BY_POOL_INDEX,
            "run_pool",
            "rsk",
            {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["queue", "state"]},
        ),
        _gsi(RUNS_BY_DEPLOYMENT_INDEX, "run_dep", "rsk", {"ProjectionType": "KEYS_ONLY"}),
        _gsi(DEPLOYMENTS_BY_POOL_INDEX, "dep_pool", SK, {"ProjectionType": "INCLUDE", "NonKeyAttributes": [DATA]}),
        _gsi(SCHEDULED_DEPLOYMENTS_INDEX, "sched", SK, {"ProjectionType": "INCLUDE", "NonKeyAttributes": [DATA]}),
    ],
}
"""The CreateTable request, less the table name: keys, indexes and on-demand billing."""

TIME_TO_LIVE: dict[str, Any] = {"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
"""UpdateTimeToLive's specification: finished runs carry `expires` (epoch seconds) and DynamoDB deletes them."""


def create_table_request(table_name: str) -> dict[str, Any]:
    """The keyword arguments of CreateTable for a table of this name."""
    return {"TableName": table_name, **copy.deepcopy(TABLE)}


def index_names() -> list[str]:
    return [gsi["IndexName"] for gsi in TABLE["GlobalSecondaryIndexes"]]
