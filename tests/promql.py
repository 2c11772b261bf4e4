"""PromQL for the tests: the metric names an expression reads, the sample names the operator
exports, and a small evaluator of instant expressions over scraped samples.

The evaluator is not Prometheus. It evaluates the subset the alerts' stall and lag expressions
use, at one instant, over one scrape: vector selectors with label matchers; `max`, `min`,
`sum` and `count` with `by`/`without`; arithmetic and comparisons between a vector and a
scalar (a comparison filters, as without `bool`); `or`, `and` and `unless` with `on`/
`ignoring`; `time()`, which is the evaluation time given, not the clock. Anything else raises
NotImplementedError, so a test can never pass on something it did not evaluate. Range
functions (`rate`, `increase`) need a series of scrapes and are out of its reach.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import promql_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

#: Grafana's variables, replaced by values PromQL accepts so an expression can be parsed.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


def without_grafana_variables(expr: str) -> str:
    """The expression with Grafana's built-in variables replaced by durations and dashboard
    variables (`$namespace`, `${job}`) by `.*` (they only appear in regex matchers)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector of a parsed expression (raises on a syntax error)."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        for child in _children(node):
            visit(child)

    visit(promql_parser.parse(expr))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label_values(...) queries included)."""
    call = re.fullmatch(r"\s*label_values\((.*?)(,\s*\w+)?\)\s*", expr, flags=re.S)
    if call:
        expr = call.group(1)
    return {s.name for s in selectors(expr) if s.name}


def _children(node: object) -> Iterable[object]:
    if isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    for attribute in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield child
    if isinstance(node, promql_parser.Call):
        yield from node.args


def exported_sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry's /metrics can carry."""
    suffixes = {
        "counter": ["_total", "_created"],
        "gauge": [""],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["", "_sum", "_count", "_created"],
        "info": ["_info"],
        "unknown": [""],
    }
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }


Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Sample:
    """One series' value, its metric name among its labels (`__name__`)."""

    labels: Labels
    value: float

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")


def scrape(text: str) -> list[Sample]:
    """The samples of an exposition text (what Prometheus stores from one scrape)."""
    return [
        Sample(frozenset({**s.labels, "__name__": s.name}.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


Value = float | list[Sample]

_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": lambda a, b: a / b if b else math.copysign(math.inf, a) if a else math.nan,
}
_COMPARISON: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "max": max,
    "min": min,
    "sum": math.fsum,
    "count": len,
}


def evaluate(expr: str, samples: list[Sample], at: float) -> list[Sample]:
    """The instant vector `expr` gives over `samples` at Unix time `at` (see the module
    docstring for what is evaluated)."""
    result = _eval(promql_parser.parse(expr), samples, at)
    if not isinstance(result, list):
        raise NotImplementedError("a scalar expression")
    return result


def _eval(node: object, samples: list[Sample], at: float) -> Value:
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.ParenExpr):
        return _eval(node.expr, samples, at)
    if isinstance(node, promql_parser.Call):
        if node.func.name == "time" and not node.args:
            return at
        raise NotImplementedError(f"function {node.func.name}")
    if isinstance(node, promql_parser.VectorSelector):
        if node.offset is not None or node.at is not None:
            raise NotImplementedError("offset/@")
        return [s for s in samples if _selects(node, s)]
    if isinstance(node, promql_parser.AggregateExpr):
        return _aggregate(node, samples, at)
    if isinstance(node, promql_parser.BinaryExpr):
        return _binary(node, samples, at)
    raise NotImplementedError(type(node).__name__)


def _selects(selector: promql_parser.VectorSelector, sample: Sample) -> bool:
    if selector.name and sample.label("__name__") != selector.name:
        return False
    if selector.matchers.or_matchers:
        raise NotImplementedError("or matchers")
    for matcher in selector.matchers.matchers:
        value, op = sample.label(matcher.name), str(matcher.op).rpartition(".")[2]
        if op not in _MATCHERS:
            raise NotImplementedError(f"matcher {op}")
        if not _MATCHERS[op](value, matcher.value):
            return False
    return True


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "Equal": operator.eq,
    "NotEqual": operator.ne,
    "Re": lambda value, pattern: re.fullmatch(pattern, value) is not None,
    "NotRe": lambda value, pattern: re.fullmatch(pattern, value) is None,
}


def _aggregate(node: promql_parser.AggregateExpr, samples: list[Sample], at: float) -> Value:
    op = str(node.op)
    if op not in _AGGREGATE or node.param is not None:
        raise NotImplementedError(f"aggregation {op}")
    vector = _vector(_eval(node.expr, samples, at))
    modifier = node.modifier
    names = set(modifier.labels) if modifier is not None else set()
    by = modifier is not None and str(modifier.type).rpartition(".")[2] == "By"
    groups: dict[Labels, list[float]] = {}
    for sample in vector:
        if modifier is None:
            key = frozenset()
        elif by:
            key = frozenset((k, v) for k, v in sample.labels if k in names)
        else:
            key = frozenset((k, v) for k, v in sample.labels if k not in names | {"__name__"})
        groups.setdefault(key, []).append(sample.value)
    return [Sample(key, float(_AGGREGATE[op](values))) for key, values in groups.items()]


def _binary(node: promql_parser.BinaryExpr, samples: list[Sample], at: float) -> Value:
    op = str(node.op)
    lhs, rhs = _eval(node.lhs, samples, at), _eval(node.rhs, samples, at)
    modifier = node.modifier
    if modifier is not None and modifier.return_bool:
        raise NotImplementedError("bool")
    if op in ("or", "and", "unless"):
        return _set_operation(op, _vector(lhs), _vector(rhs), modifier)
    if isinstance(lhs, list) and isinstance(rhs, list):
        raise NotImplementedError(f"vector {op} vector")
    if op in _ARITHMETIC:
        apply = _ARITHMETIC[op]
        if isinstance(lhs, float) and isinstance(rhs, float):
            return apply(lhs, rhs)
        if isinstance(lhs, list):
            return [Sample(_no_name(s.labels), apply(s.value, float(rhs))) for s in lhs]
        return [Sample(_no_name(s.labels), apply(lhs, s.value)) for s in _vector(rhs)]
    if op in _COMPARISON:
        holds = _COMPARISON[op]
        if isinstance(lhs, list):
            return [s for s in lhs if holds(s.value, float(rhs))]
        if isinstance(rhs, list):
            return [s for s in rhs if holds(float(lhs), s.value)]
        raise NotImplementedError(f"scalar {op} scalar without bool")
    raise NotImplementedError(f"operator {op}")


def _set_operation(
    op: str, lhs: list[Sample], rhs: list[Sample], modifier: object | None
) -> list[Sample]:
    matching = getattr(modifier, "matching", None)

    def key(sample: Sample) -> Labels:
        if matching is None:
            return _no_name(sample.labels)
        names = set(matching.labels)
        if str(matching.type).rpartition(".")[2] == "Include":  # on (...)
            return frozenset((k, v) for k, v in sample.labels if k in names)
        return frozenset((k, v) for k, v in _no_name(sample.labels) if k not in names)

    right = {key(s) for s in rhs}
    if op == "and":
        return [s for s in lhs if key(s) in right]
    if op == "unless":
        return [s for s in lhs if key(s) not in right]
    left = {key(s) for s in lhs}
    return lhs + [s for s in rhs if key(s) not in left]


def _vector(value: Value) -> list[Sample]:
    if not isinstance(value, list):
        raise NotImplementedError("a scalar where a vector is needed")
    return value


def _no_name(labels: Labels) -> Labels:
    return frozenset((k, v) for k, v in labels if k != "__name__")
