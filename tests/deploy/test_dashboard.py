"""The Grafana dashboard (charts/flowexport-operator/dashboards/flowexport.json, the same file
as docs/grafana/flowexport.json): every PromQL expression parses and reads only metrics the
operator exports, and it shows what the issue asked of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from flowexport.kube import metrics
from tests.chart import CHART, ROOT
from tests.promql import exported_sample_names, metric_names, without_grafana_variables

SHIPPED = CHART / "dashboards" / "flowexport.json"
DOCS_COPY = ROOT / "docs" / "grafana" / "flowexport.json"
DASHBOARD: dict[str, Any] = json.loads(SHIPPED.read_text())


def panels(items: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in DASHBOARD["panels"] if items is None else items:
        yield panel
        yield from panels(panel.get("panels") or [])


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in panels()
        for t in p.get("targets", [])
    ]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]["query"]))
    return found


def test_the_docs_copy_is_the_charts() -> None:
    copy = f"cp {SHIPPED.relative_to(ROOT)} {DOCS_COPY.relative_to(ROOT)}"
    assert DOCS_COPY.read_bytes() == SHIPPED.read_bytes(), f"the docs' copy differs: {copy}"


@pytest.mark.parametrize(("where", "expr"), expressions(), ids=lambda v: str(v)[:60])
def test_every_expression_parses_and_reads_exported_metrics(where: str, expr: str) -> None:
    exported = exported_sample_names(metrics.REGISTRY)
    used = metric_names(without_grafana_variables(expr))  # raises on a syntax error
    assert used, f"{where} reads no metric"
    assert used <= exported, f"{where} reads {sorted(used - exported)}, which no one exports"


def test_every_panel_queries_the_chosen_data_source() -> None:
    (source,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{source['name']}}}"}
        assert panel.get("description"), f"{panel['title']} says nothing of what it shows"
        assert panel["targets"], panel["title"]


def test_per_flowexport_panels_follow_the_namespace_and_flowexport_variables() -> None:
    for where, expr in expressions():
        if "flowexport_" in expr and "job=~" not in expr and not where.startswith("variable"):
            assert 'namespace=~"$namespace"' in expr and 'name=~"$flowexport"' in expr, where


def test_it_shows_what_operators_look_for() -> None:
    every = " ".join(expr for _, expr in expressions())
    for metric in (
        "flowexport_flows_uploaded_total",  # flows uploaded /s
        "flowexport_records_read_total",  # records read /s
        "flowexport_lag_seconds",
        "flowexport_read_through_timestamp_seconds",  # the oldest unread record
        "flowexport_last_progress_timestamp_seconds",  # a stall
        "flowexport_upload_duration_seconds_bucket",  # upload latency
        "flowexport_errors_total",  # errors by reason
        "flowexport_condition",  # conditions per FlowExport
        "flowexport_workloads",
        "flowexport_shard_lag_seconds",  # per shard
        "process_resident_memory_bytes",  # against the memory limit
        "flowexport_build_info",
    ):
        assert metric in every, metric
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert DASHBOARD["uid"] == "flowexport-operator"
