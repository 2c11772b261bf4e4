"""Discovery and OpenAPI: what clients read to learn which resources the simulator serves.

`/version`, `/api`, `/apis`, each group (`/apis/GROUP`), each group version's resource list,
and OpenAPI v3 (an index, then one document a group version) for `kubectl explain`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.store import Store

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class Discovery:
    """The discovery and OpenAPI documents of what `store` serves at the moment."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def version(self, request: web.Request) -> web.Response:
        """GET /version."""
        return web.json_response(
            {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-flowexport-sim",
                "platform": "linux/amd64",
                "goVersion": "go1.22",
            }
        )

    async def api_versions(self, request: web.Request) -> web.Response:
        """GET /api: the core group's versions."""
        return web.json_response(
            {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        )

    def groups(self) -> dict[str, list[str]]:
        """Each named API group and its versions."""
        groups: dict[str, list[str]] = {}
        for kind in self.store.types.values():
            if kind.group and kind.version not in groups.setdefault(kind.group, []):
                groups[kind.group].append(kind.version)
        return groups

    async def api_groups(self, request: web.Request) -> web.Response:
        """GET /apis: every named group."""
        groups = [_group(name, versions) for name, versions in sorted(self.groups().items())]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def api_group(self, name: str) -> dict[str, Any] | None:
        """The APIGroup document of /apis/NAME, or None for an unknown group."""
        versions = self.groups().get(name)
        if not versions:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}

    def resource_list(self, group: str, version: str) -> dict[str, Any]:
        """The APIResourceList of a group version; 404 if it serves nothing."""
        resources = []
        for kind in self.store.types.values():
            if (kind.group, kind.version) != (group, version):
                continue
            resources.append(
                {
                    "name": kind.plural,
                    "singularName": kind.singular,
                    "namespaced": kind.namespaced,
                    "kind": kind.kind,
                    "verbs": _VERBS,
                    "shortNames": kind.short_names,
                    "categories": kind.categories,
                }
            )
            if kind.status:
                resources.append(
                    {
                        "name": f"{kind.plural}/status",
                        "singularName": "",
                        "namespaced": kind.namespaced,
                        "kind": kind.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "NotFound", f"the server could not find {group}/{version}")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def openapi_index(self, request: web.Request) -> web.Response:
        """GET /openapi/v3: where each group version's document is."""
        paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}
        for group, versions in self.groups().items():
            for version in versions:
                paths[f"apis/{group}/{version}"] = {
                    "serverRelativeURL": (
                        f"/openapi/v3/apis/{group}/{version}?hash={self.store.revision}"
                    )
                }
        return web.json_response({"paths": paths})

    async def openapi_document(self, request: web.Request) -> web.Response:
        """Schemas of a group version, and its paths with their query parameters: kubectl
        looks for `fieldValidation` there to know that the server validates fields itself."""
        parts = request.match_info["path"].split("/")
        group, version = ("", parts[-1]) if parts[0] == "api" else (parts[1], parts[2])
        schemas: dict[str, Any] = {}
        paths: dict[str, Any] = {}
        for kind in self.store.types.values():
            if (kind.group, kind.version) != (group, version):
                continue
            gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
            if kind.schema is not None:
                reversed_group = ".".join(reversed(kind.group.split(".")))
                schemas[f"{reversed_group}.{kind.version}.{kind.kind}"] = {
                    **kind.schema,
                    "x-kubernetes-group-version-kind": [gvk],
                }
            prefix = f"/apis/{kind.group}/{kind.version}" if kind.group else "/api/v1"
            scope = "/namespaces/{namespace}" if kind.namespaced else ""
            operation = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                ],
            }
            paths[f"{prefix}{scope}/{kind.plural}"] = {"post": operation}
            paths[f"{prefix}{scope}/{kind.plural}/{{name}}"] = {
                "put": operation,
                "patch": operation,
            }
        return web.json_response(
            {
                "openapi": "3.0.0",
                "info": {"title": "flowexport kube-sim", "version": "v1"},
                "paths": paths,
                "components": {"schemas": schemas},
            }
        )


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    """A group's name and versions, the first preferred."""
    return {
        "name": name,
        "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
    }
