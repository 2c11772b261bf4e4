"""Field ownership for server-side apply: field sets, their FieldsV1 encoding, and the
`metadata.managedFields` an API server keeps (pure).

A field set holds the paths a manager owns, as FieldsV1 spells their steps: `f:spec`,
`f:suspend`, and for list elements `k:{"name":"x"}` (a list of maps with
`x-kubernetes-list-map-keys`) or `v:"x"` (a `set`); any other list is atomic, one field.
`metadata.finalizers` is a set and `metadata.ownerReferences` a map by uid, as in the
built-in schema. The metadata the server owns (name, uid, resourceVersion, ...) is nobody's.

An Update takes every field it changes from the other managers (never a conflict). An Apply
owns exactly the fields its configuration names; changing a value another manager owns is a
409 conflict unless forced (ownership then moves), applying the same value shares it, and a
field the applier named last time and no longer names is removed unless someone else owns it.
Managers are told apart as the API server does: manager, operation, subresource, and for
Update the apiVersion.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from flowexport.sim.kube.errors import ApiError

Path = tuple[str, ...]
APPLY, UPDATE = "Apply", "Update"
#: The list types of the built-in ObjectMeta.
_METADATA = {
    "type": "object",
    "properties": {
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set"},
        "ownerReferences": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["uid"],
        },
    },
}
#: Metadata the server sets, which no manager owns.
_SERVER_OWNED = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "managedFields",
}
_MISSING = object()


@dataclass
class Entry:
    """One `managedFields` entry: a manager's operation and the fields it owns."""

    manager: str
    operation: str
    api_version: str
    time: str
    subresource: str = ""
    fields: set[Path] = field(default_factory=set)

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What tells managers apart (an applier keeps its identity across versions)."""
        version = "" if self.operation == APPLY else self.api_version
        return (self.manager, self.operation, self.subresource, version)

    def describe(self) -> str:
        """The manager as the API server names it in a conflict."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text

    def encode(self) -> dict[str, Any]:
        """The entry as `metadata.managedFields` holds it."""
        out = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(self.fields),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def entries(managed: Any) -> list[Entry]:
    """The entries of a `managedFields` value; malformed ones (`[{}]` resets) are dropped."""
    out = []
    for raw in managed if isinstance(managed, list) else []:
        if not isinstance(raw, dict) or raw.get("operation") not in (APPLY, UPDATE):
            continue
        if not raw.get("manager"):
            continue
        out.append(
            Entry(
                raw["manager"],
                raw["operation"],
                str(raw.get("apiVersion", "")),
                str(raw.get("time", "")),
                str(raw.get("subresource", "")),
                paths_of(raw.get("fieldsV1") or {}),
            )
        )
    return out


def encode_entries(managers: list[Entry]) -> list[dict[str, Any]]:
    """The non-empty entries, ordered as the API server orders them."""
    kept = [e for e in managers if e.fields]
    kept.sort(key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource))
    return [e.encode() for e in kept]


# -- field sets -----------------------------------------------------------------------------


def owned_paths(obj: Any, schema: dict[str, Any] | None) -> set[Path]:
    """Every field path of `obj` a manager can own (its leaves, list elements, empty maps)."""
    paths = _walk(obj, _root(schema), ())
    return {
        p
        for p in paths
        if p[0] not in ("f:apiVersion", "f:kind")
        and not (p[0] == "f:metadata" and len(p) > 1 and p[1][2:] in _SERVER_OWNED)
    }


def applied_paths(
    config: dict[str, Any], schema: dict[str, Any] | None, sub: str | None, has_status: bool
) -> set[Path]:
    """The fields an apply configuration names, within what the (sub)resource writes."""
    paths = owned_paths(config, schema)
    if sub == "status":
        return {p for p in paths if p[0] == "f:status"}
    if has_status:
        return {p for p in paths if p[0] != "f:status"}
    return paths


def _root(schema: dict[str, Any] | None) -> dict[str, Any]:
    properties = dict((schema or {}).get("properties") or {})
    properties["metadata"] = _METADATA
    return {**(schema or {}), "type": "object", "properties": properties}


def _child(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not schema:
        return None
    properties = schema.get("properties") or {}
    if key in properties:
        return dict(properties[key])
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _items(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    items = (schema or {}).get("items")
    return items if isinstance(items, dict) else None


def _list_type(schema: dict[str, Any] | None, items: list[Any]) -> tuple[str, list[str]]:
    """`atomic`, `set` or `map` (with its keys); a map list whose elements lack their keys is
    treated as atomic."""
    kind = (schema or {}).get("x-kubernetes-list-type", "atomic")
    keys = list((schema or {}).get("x-kubernetes-list-map-keys") or [])
    if kind == "map" and not (
        keys and all(isinstance(i, dict) and all(k in i for k in keys) for i in items)
    ):
        return "atomic", []
    return kind, keys


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + _json({k: item[k] for k in keys})


def _walk(value: Any, schema: dict[str, Any] | None, path: Path) -> set[Path]:
    if isinstance(value, dict):
        if not value:
            return {path} if path else set()
        out: set[Path] = set()
        for key, item in value.items():
            out |= _walk(item, _child(schema, key), (*path, f"f:{key}"))
        return out
    if isinstance(value, list) and value:
        kind, keys = _list_type(schema, value)
        if kind == "map":
            out = set()
            for item in value:
                element = (*path, _key(item, keys))
                out |= {element} | _walk(item, _items(schema), element)
            return out
        if kind == "set":
            return {(*path, "v:" + _json(item)) for item in value}
    return {path}


def value_at(obj: Any, path: Path) -> Any:
    """The value at a field path (a sentinel when there is none)."""
    node = obj
    for step in path:
        kind, _, text = step.partition(":")
        if kind == "f" and isinstance(node, dict) and text in node:
            node = node[text]
        elif kind == "k" and isinstance(node, list):
            wanted = json.loads(text)
            node = next(
                (
                    i
                    for i in node
                    if isinstance(i, dict) and all(i.get(k) == v for k, v in wanted.items())
                ),
                _MISSING,
            )
        elif kind == "v" and isinstance(node, list) and json.loads(text) in node:
            node = json.loads(text)
        else:
            return _MISSING
        if node is _MISSING:
            return node
    return node


def compare(
    old: dict[str, Any], new: dict[str, Any], schema: dict[str, Any] | None
) -> tuple[set[Path], set[Path]]:
    """(the fields added or changed, the fields removed) from `old` to `new`."""
    before, after = owned_paths(old, schema), owned_paths(new, schema)
    changed = after - before
    for path in after & before:
        now = value_at(new, path)
        if isinstance(now, dict) and now:
            continue  # a list element: its own fields tell what changed
        if _json(now) != _json(value_at(old, path)):
            changed.add(path)
    return changed, before - after


def path_text(path: Path) -> str:
    """A field path as conflicts name it: `.spec.x`, `[name="a"]`, `[="v"]`."""
    out = ""
    for step in path:
        kind, _, text = step.partition(":")
        if kind == "f":
            out += f".{text}"
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(text).items())
            out += "]"
        else:
            out += f"[={text}]"
    return out


# -- FieldsV1 -------------------------------------------------------------------------------


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """The FieldsV1 encoding of a field set (`"."` marks a member that has children)."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for step in path:
            node = node.setdefault(step, {})
    for path in paths:
        node = root
        for step in path:
            node = node[step]
        if node and "." not in node:
            node["."] = {}
    return root


def paths_of(encoded: dict[str, Any], prefix: Path = ()) -> set[Path]:
    """The field set a FieldsV1 value encodes."""
    out: set[Path] = set()
    for step, child in encoded.items():
        if step == ".":
            out.add(prefix)
        elif isinstance(child, dict) and child:
            out |= paths_of(child, (*prefix, step))
        else:
            out.add((*prefix, step))
    return out


# -- apply ----------------------------------------------------------------------------------


def merge_applied(live: Any, config: Any, schema: dict[str, Any] | None, top: bool = True) -> Any:
    """A copy of `live` with `config` merged in: maps field by field, map and set lists
    element by element, anything else replaced."""
    if top:
        live, schema = copy.deepcopy(live), _root(schema)
    if isinstance(config, dict) and isinstance(live, dict):
        out = dict(live)
        for key, item in config.items():
            out[key] = merge_applied(live.get(key), item, _child(schema, key), False)
        return out
    if isinstance(config, list) and isinstance(live, list):
        kind, keys = _list_type(schema, live + config)
        if kind == "map":
            merged = list(live)
            for item in config:
                at = next(
                    (n for n, i in enumerate(merged) if _key(i, keys) == _key(item, keys)), -1
                )
                if at < 0:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = merge_applied(merged[at], item, _items(schema), False)
            return merged
        if kind == "set":
            return live + [copy.deepcopy(i) for i in config if i not in live]
    return copy.deepcopy(config)


def drop_unapplied(
    obj: dict[str, Any], managers: list[Entry], applier: Entry | None, applied: set[Path]
) -> None:
    """Remove from `obj` the fields `applier` applied before and no longer names, unless
    another manager owns them (or something under them)."""
    if applier is None:
        return
    kept = set(applied).union(*(e.fields for e in managers if e is not applier))
    for path in sorted(applier.fields - applied, key=len):  # a list element before its fields
        if not any(k[: len(path)] == path for k in kept):
            _remove(obj, path)


def _remove(obj: dict[str, Any], path: Path) -> None:
    node = value_at(obj, path[:-1])
    kind, _, text = path[-1].partition(":")
    if kind == "f" and isinstance(node, dict):
        node.pop(text, None)
    elif isinstance(node, list):
        gone = value_at(node, (path[-1],))
        node[:] = [i for i in node if i is not gone and not (kind == "v" and i == gone)]
    if len(path) > 2 and node in ({}, []):  # a map or list emptied by it goes too
        _remove(obj, path[:-1])


def conflict(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    """The 409 an apply gets for the fields other managers own with other values."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {e.describe()}",
            "field": path_text(p),
        }
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {entry.describe()}: {path_text(path)}"
        )
    else:
        lines = []
        for who in sorted({e.describe() for e, _ in conflicts}):
            lines.append(f"conflicts with {who}:")
            lines += [f"- {path_text(p)}" for e, p in conflicts if e.describe() == who]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def track(
    current: dict[str, Any],
    new: dict[str, Any],
    schema: dict[str, Any] | None,
    actor: Entry,
    applied: set[Path] | None = None,
    force: bool = False,
    requested: Any = None,
) -> list[dict[str, Any]]:
    """The `managedFields` of `new`, written over `current` by `actor`: an Update when
    `applied` is None, else an Apply of those fields (409 on conflicts unless `force`).
    `requested` is a `managedFields` the write itself carried: honoured when it differs from
    the current one and is not empty (`[{}]` resets)."""
    old = current.get("metadata", {}).get("managedFields")
    managers = entries(requested if requested not in (None, [], old) else old)
    mine = next((e for e in managers if e.identity == actor.identity), None)
    if mine is None:
        mine = actor
        managers.append(mine)
    before = set(mine.fields)
    changed, removed = compare(current, new, schema)
    others = [e for e in managers if e is not mine]
    if applied is not None:
        clashes = [(e, p) for e in others for p in sorted(e.fields & changed)]
        if clashes and not force:
            raise conflict(clashes)
    for entry in others:
        entry.fields -= changed | removed
    if applied is None:
        mine.fields = (mine.fields - removed) | changed
    else:
        mine.fields = set(applied)
    if mine is actor or changed or removed or mine.fields != before:
        mine.api_version, mine.time = actor.api_version, actor.time  # else a no-op
    return encode_entries(managers)
