"""core.diff_names: ids in diffs shown by name, one query per field, deleted ids said so."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import diff_names
from tests.deployments.builders import gguf_variant, node

pytestmark = pytest.mark.django_db


def test_ids_read_as_names_and_other_values_stay():
    variant = gguf_variant()
    host = node("node-7")
    changes = {
        "variant": {"before": variant.pk, "after": 999_999_999},
        "placement.node_id": {"before": None, "after": host.pk},
        "replicas": {"before": 1, "after": 2},
        "paused": {"before": False, "after": True},
    }
    with CaptureQueriesContext(connection) as queries:
        rows = {row["field"]: row for row in diff_names.rows(changes)}
    assert len(queries) == 2  # one per kind of id
    assert rows["variant"]["before"] == f"{variant} (#{variant.pk})"
    assert rows["variant"]["after"] == "#999999999 (deleted)"
    assert rows["placement.node_id"] == {
        "field": "placement.node_id",
        "before": None,
        "after": f"node-7 (#{host.pk})",
    }
    assert rows["replicas"]["after"] == 2 and rows["paused"]["after"] is True


def test_an_empty_diff_has_no_rows():
    assert diff_names.rows(None) == [] and diff_names.rows({}) == []
