"""A whole FlowExport object checked as the API server's admission checks it (for `sync`).

The API server, for a `kubectl apply` (strict field validation, the default since 1.27),
refuses: another apiVersion or kind; unknown fields at any level (metadata's included); a
value of the wrong JSON type (it never coerces: `orgId: "1"` is refused); an invalid name,
namespace, label or annotation; and everything the CRD's schema and CEL rules refuse. The
pydantic models in strict mode (no coercion) check the spec; this module checks the rest.

`yaml_documents` reads YAML as kubectl does where PyYAML differs: timestamps stay strings, a
whole float is a number without a fraction (`orgId: 1.0` reaches the server as `1`). A
key repeated in one mapping takes its last value, as with kubectl (whose YAML to JSON
conversion keeps the last one, so the server never sees the repeat), with a warning.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from flowexport.api.models import GROUP, KIND, VERSION, FlowExportSpec
from flowexport.api.validation import SpecError, describe_errors

log = logging.getLogger("flowexport.sync")

API_VERSION = f"{GROUP}/{VERSION}"
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
#: The fields of ObjectMeta (metav1): any other under metadata is an unknown field.
_OBJECT_META = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
#: The API server's limit on all annotations of an object together (keys and values).
_ANNOTATIONS_BYTES = 256 * 1024


class KubeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading as kubectl does: no timestamps (they stay strings, as
    `startFrom: 2026-01-01T00:00:00Z` reaches the server); a repeated key is warned about."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping; a key given twice keeps its last value, with a warning."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                mark = key_node.start_mark
                log.warning(
                    "line %d: key %r is repeated; the last value is used (as kubectl does)",
                    mark.line + 1,
                    str(key)[:64],
                )
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
        return super().construct_mapping(node, deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | int:
        """A float; a whole one (1.0) an int, as kubectl's YAML to JSON writes it (`1`)."""
        value: float = super().construct_yaml_float(node)
        return int(value) if math.isfinite(value) and value.is_integer() else value


KubeYamlLoader.add_constructor("tag:yaml.org,2002:float", KubeYamlLoader.construct_yaml_float)


KubeYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_documents(text: str) -> list[Any]:
    """The non-empty documents of a YAML stream, read as kubectl reads them."""
    return [d for d in yaml.load_all(text, Loader=KubeYamlLoader) if d is not None]


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column, from 1)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{exc.problem}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_flowexport(document: Any) -> bool:
    """Whether a document means to be a FlowExport (its kind, or any kind of our group)."""
    if not isinstance(document, dict):
        return False
    api_version = document.get("apiVersion")
    in_group = isinstance(api_version, str) and api_version.split("/")[0] == GROUP
    return document.get("kind") == KIND or in_group


def check_flowexport(document: Mapping[str, Any]) -> FlowExportSpec:
    """The spec of a FlowExport object, if the API server would admit the object; else
    SpecError naming every problem by its path (values never echoed)."""
    problems: list[tuple[str, str]] = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(("apiVersion", f"must be {API_VERSION}"))
    if document.get("kind") != KIND:
        problems.append(("kind", f"must be {KIND}"))
    problems += [(str(k)[:64], "unknown field") for k in document if k not in _TOP_LEVEL]
    problems += _metadata_problems(document.get("metadata"))
    raw = document.get("spec")
    if not isinstance(raw, dict):
        problems.append(("spec", "Required value" if raw is None else "must be an object"))
        raise SpecError(problems)
    try:
        spec = FlowExportSpec.model_validate(raw, strict=True)
    except ValidationError as exc:
        problems += describe_errors(exc)
    if problems:
        raise SpecError(problems)
    return spec


def _metadata_problems(metadata: Any) -> list[tuple[str, str]]:
    if not isinstance(metadata, dict):
        return [("metadata.name", "Required value")]
    problems = [
        (f"metadata.{str(k)[:64]}", "unknown field") for k in metadata if k not in _OBJECT_META
    ]
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        problems.append(("metadata.name", "Required value"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(
            ("metadata.name", "must be a lowercase RFC 1123 subdomain (a-z, 0-9, - and .)")
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace)
    ):
        problems.append(("metadata.namespace", "must be a lowercase RFC 1123 label"))
    generation = metadata.get("generation")
    if generation is not None and (not isinstance(generation, int) or isinstance(generation, bool)):
        problems.append(("metadata.generation", "must be an integer"))
    for field in ("labels", "annotations"):
        problems += _map_problems(metadata.get(field), field)
    return problems


def _map_problems(values: Any, field: str) -> list[tuple[str, str]]:
    if values is None:
        return []
    where = f"metadata.{field}"
    if not isinstance(values, dict):
        return [(where, "must be an object of strings")]
    problems = []
    size = 0
    for key, value in values.items():
        if not isinstance(key, str) or not _qualified_name(key):
            problems.append((where, "keys must be qualified names ([prefix/]name)"))
        if not isinstance(value, str):
            problems.append((where, "values must be strings"))
            continue
        size += len(key) + len(value) if isinstance(key, str) else 0
        if field == "labels" and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
            problems.append((where, "values must be valid label values (at most 63)"))
    if field == "annotations" and size > _ANNOTATIONS_BYTES:
        problems.append((where, "must have at most 262144 bytes"))
    return problems


def _qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name) is not None
