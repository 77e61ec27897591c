"""Regression: a cluster id starting with '-' made `kafka-storage format -t <id>` fail
(found by a cold `stack up`, see tests/vectors/regressions/kafka_cluster_id_dash.json)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from infra.kafka import new_cluster_id

VECTOR = Path(__file__).parents[1] / "vectors" / "regressions" / "kafka_cluster_id_dash.json"


def test_an_id_starting_with_dash_is_drawn_again() -> None:
    case = json.loads(VECTOR.read_text())
    draws = iter([uuid.UUID(case["uuid_that_encodes_to_dash"]), uuid.UUID(case["next_uuid"])])
    assert new_cluster_id(lambda: next(draws)) == case["expected_cluster_id"]


def test_ids_are_22_url_safe_characters() -> None:
    for _ in range(1000):
        cid = new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
