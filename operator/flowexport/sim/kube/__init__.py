"""A Kubernetes API server simulator: the semantics kopf and kubectl rely on, over real HTTP.

Served: `/version`, discovery (`/api`, `/api/v1`, `/apis`, group versions), OpenAPI v3 for
`kubectl explain`; core `namespaces`, `secrets`, `events`, `configmaps`, `serviceaccounts`;
RBAC Roles, ClusterRoles and bindings; CRDs (`apiextensions.k8s.io/v1`), which register their
resources when created. Custom resources are pruned, defaulted and validated against their
schema (422 `Invalid`; 400 for unknown fields under `fieldValidation=Strict`). Lists and
watches take label and field (`metadata.name`, `metadata.namespace`) selectors; `kubectl get`
receives server-side Tables built from the CRD's printer columns. What GitOps tools rely on:
`dryRun=All` on every write, server-side apply with field managers and conflicts
(`managedFields`), and namespace deletion that cascades to the namespace's content.

Modules, one job each:

- `server`: `KubeSimulator` (the aiohttp app: authentication, RBAC, routing) and `kubeconfig`
- `store`: objects, resourceVersions, generations, finalizers, writes, patches and apply,
  dry runs, namespace termination, history
- `fields`: server-side apply's field sets, `managedFields` and conflicts (pure)
- `watch`: watch streams (replay, bookmarks, timeouts, 410 `Expired`)
- `discovery`: `/version`, `/api`, `/apis`, resource lists and OpenAPI v3
- `tables`: server-side Tables for `kubectl get` (lists and single objects)
- `admission`: pruning, defaulting and validation of a write; a Secret's `stringData`
- `resources`: the served resource types, built-in and from CRDs
- `errors`: `ApiError`, answered as a `Status` object
- `faults`: injected errors, hangs and dropped connections (`KubeFault`), set from Python or
  at `/_faults`
- `rbac`, `proto`, `schema`: RBAC rules, kubectl's protobuf bodies, structural schemas (pure)
"""

from __future__ import annotations

from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.faults import KubeFault, KubeFaults
from flowexport.sim.kube.resources import BUILTINS, RBAC, ResourceType
from flowexport.sim.kube.server import ADMIN, ADMIN_TOKEN, AUDIT, KubeSimulator, kubeconfig
from flowexport.sim.kube.store import HISTORY

__all__ = [
    "ADMIN",
    "ADMIN_TOKEN",
    "AUDIT",
    "BUILTINS",
    "HISTORY",
    "RBAC",
    "ApiError",
    "KubeFault",
    "KubeFaults",
    "KubeSimulator",
    "ResourceType",
    "kubeconfig",
]
