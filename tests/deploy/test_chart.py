"""The Helm chart, offline: lint, render with default and non-default values, validate every
rendered manifest against the Kubernetes schemas, and check it against the operator itself."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from flowexport import __version__
from flowexport.api.crd import CRDS, FLOWEXPORT_CRD, CrdDef, build_crd
from flowexport.cli import build_parser
from flowexport.kube import metrics
from flowexport.urls import parse_host_port
from tests.chart import CHART, RELEASE_NAMESPACE, ROOT, container_args, of_kind, render
from tests.chart import render_files as render_files_of
from tests.markdown import anchors
from tests.promql import exported_sample_names, metric_names

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas here.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
IRSA_ROLE = "arn:aws:iam::123456789012:role/flowexport-operator"
PROMETHEUS_OPERATOR = "monitoring.coreos.com/"
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}

#: The ClusterRole (and binding) reading AccountGrants, with operator.accountGrants Enforce.
GRANTS_ROLE = "fx-flowexport-operator-account-grants"
#: The namespaced install's rules: one ClusterRole, bound in each watched namespace.
WATCHED_ROLE = "fx-flowexport-operator-watched"


def watched_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The ClusterRole a namespaced install binds in each watched namespace."""
    (role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == WATCHED_ROLE]
    return role


def without_access_rule(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules but the one on the operator's own RoleBinding (namespaced install only)."""
    return [r for r in rules if r["apiGroups"] != ["rbac.authorization.k8s.io"]]


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespace-list": {"watch": {"scope": "namespaces", "namespaces": ["security", "payments"]}},
    "all-namespaces": {"watch": {"scope": "all"}},
    "irsa": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}},
    "metrics-off": {"metrics": {"enabled": False}},
    "replicas": {"replicas": 3, "sharding": {"leaseSeconds": 20}},
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
    },
    "alerts": {
        "metrics": {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "prom"},
                "notReadyFor": "30m",
                "lagSeconds": 900,
            }
        }
    },
    "network-policy": {
        "networkPolicy": {"enabled": True, "metricsFrom": [MONITORING], "egressPorts": [443, 7443]}
    },
    "existing-account-no-rbac": {
        "serviceAccount": {"create": False, "name": "ops"},
        "rbac": {"create": False},
    },
    "digest-and-extras": {
        "image": {
            "repository": "registry.example.com/flowexport-operator",
            "digest": "sha256:" + "a" * 64,
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {
            "verbose": True,
            "logFormat": "plain",
            "extraArgs": ["--settle=30"],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "allowedPceHosts": ["pce.example.com", "pce2.example.com:8443", "[fd00:1::5]:9443"],
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
    },
    "operations": {
        "replicas": 3,
        "commonLabels": {"team": "secops", "cost-centre": "cc-42"},
        "podLabels": {"sidecar.istio.io/inject": "false"},
        "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            },
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "flowexport-operator"}},
            },
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "node-role", "operator": "In", "values": ["system"]}
                            ]
                        }
                    ]
                }
            }
        },
        "extraVolumes": [{"name": "corporate-ca", "configMap": {"name": "corporate-ca"}}],
        "extraVolumeMounts": [
            {"name": "corporate-ca", "mountPath": "/etc/flowexport/ca", "readOnly": True}
        ],
        "operator": {"extraEnv": [{"name": "AWS_CA_BUNDLE", "value": "/etc/flowexport/ca/ca.crt"}]},
        "grafanaDashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "annotations": {"grafana_folder": "Operators"},
        },
        "networkPolicy": {"enabled": True},
    },
    "crds-unmanaged": {"crds": {"enabled": False}},
    # As a subchart: helm hands it the parent's `global` values, whatever keys they hold.
    "subchart-globals": {
        "global": {
            "imageRegistry": "registry.example.com/",
            "imagePullSecrets": [{"name": "regcred"}],
            "storageClass": "fast",
        }
    },
}
EXAMPLE_VALUES = sorted((ROOT / "examples" / "helm").glob("*.yaml"))


def lint_problems(values: dict[str, Any] | None = None) -> list[str]:
    """Lint findings of severity warning or error."""
    report = helm.lint(CHART, values, strict=True, namespace=RELEASE_NAMESPACE)
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]


#: Kinds newer than the oldest Kubernetes the chart supports, with the version that serves them
#: (the chart renders them only there: `semverCompare` on the cluster's version).
NEWER_KINDS = {
    "ValidatingAdmissionPolicy": "1.30.0",
    "ValidatingAdmissionPolicyBinding": "1.30.0",
}


def validate_object(obj: dict[str, Any]) -> None:
    """Validate against the Kubernetes schemas (strict: unknown fields are errors)."""
    oldest = NEWER_KINDS.get(obj["kind"], KUBE_VERSIONS[0])
    for version in (oldest, *KUBE_VERSIONS[1:]):
        kubernetes_validate.validate(obj, version, strict=True)


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = of_kind(objects, "Deployment")
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return found


def parsed_args(objects: list[dict[str, Any]]) -> argparse.Namespace:
    """The container's arguments as the real `flowexport` parser reads them (entrypoint
    `flowexport run`, see the Dockerfile)."""
    return build_parser().parse_args(["run", *container_args(objects)])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_chart_lints_clean(variant: str) -> None:
    assert lint_problems(VARIANTS[variant]) == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_is_valid_kubernetes(variant: str) -> None:
    objects = render(VARIANTS[variant])
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith(PROMETHEUS_OPERATOR):
            continue  # not built-in kinds: checked by the tests of the ServiceMonitor and rules
        validate_object(obj)


@pytest.mark.parametrize("path", EXAMPLE_VALUES, ids=lambda p: p.name)
def test_example_values_lint_and_render_valid_objects(path: Any) -> None:
    values = yaml.safe_load(path.read_text())
    assert lint_problems(values) == []
    for obj in render(values):
        if not obj["apiVersion"].startswith(PROMETHEUS_OPERATOR):
            validate_object(obj)


def test_values_that_are_not_in_the_schema_are_refused() -> None:
    assert any("scope" in p for p in lint_problems({"watch": {"scope": "everywhere"}}))
    assert any("watchNamespace" in p for p in lint_problems({"watchNamespace": "security"}))
    assert any("sec*" in p for p in lint_problems({"watch": {"namespaces": ["sec*"]}}))
    with pytest.raises(helm.HelmError, match=r"serviceMonitor\.enabled needs metrics\.enabled"):
        render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})


@pytest.mark.parametrize("definition", CRDS, ids=lambda d: d.kind)
def test_the_chart_crd_is_the_generated_crd(definition: CrdDef) -> None:
    chart_crd = CHART / "files" / definition.chart_file
    assert chart_crd.read_bytes() == (ROOT / "crds" / definition.file).read_bytes(), (
        f"charts/flowexport-operator/files/{definition.chart_file} is stale: run `make crd`"
    )
    validate_object(yaml.safe_load(chart_crd.read_text()))


def test_the_chart_ships_exactly_the_generated_crds() -> None:
    shipped = sorted(p.name for p in (CHART / "files").glob("*-crd.yaml"))
    assert shipped == sorted(d.chart_file for d in CRDS)
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(d.file for d in CRDS)


def rendered_crds(values: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values or {}, name="fx", namespace=RELEASE_NAMESPACE, **options)
    return [
        doc
        for path, text in files.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] == "CustomResourceDefinition"
    ]


def rendered_crd(
    values: dict[str, Any] | None = None, name: str = FLOWEXPORT_CRD.name, **options: Any
) -> dict[str, Any] | None:
    found = rendered_crds(values, **options)
    assert len(found) in (0, len(CRDS))
    named = [doc for doc in found if doc["metadata"]["name"] == name]
    return named[0] if named else None


@pytest.mark.parametrize(
    "options",
    [{"is_install": True}, {"is_upgrade": True, "revision": 2}],
    ids=["install", "upgrade"],
)
def test_the_crd_is_installed_and_upgraded_with_the_release_and_kept(
    options: dict[str, Any],
) -> None:
    """cert-manager's model: the CRD is a template, so `helm upgrade` applies a new schema (Helm
    never upgrades crds/), and `helm.sh/resource-policy: keep` leaves it (and every FlowExport)
    on uninstall."""
    for definition in CRDS:
        crd = rendered_crd(name=definition.name, **options)
        assert crd is not None, definition.kind
        generated = build_crd(definition)
        assert crd["spec"] == generated["spec"]  # the template changes no byte of the schema
        assert crd["metadata"]["name"] == generated["metadata"]["name"]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        validate_object(crd)


def test_the_crd_can_be_left_to_the_user_or_not_kept() -> None:
    unkept = rendered_crd({"crds": {"keep": False}}, is_install=True)
    assert unkept is not None and "annotations" not in unkept["metadata"]
    argo = {"argocd.argoproj.io/sync-options": "Delete=false"}
    kept_by_argo = rendered_crd({"crds": {"annotations": argo}}, is_install=True)
    assert kept_by_argo is not None
    assert kept_by_argo["metadata"]["annotations"] == {**argo, "helm.sh/resource-policy": "keep"}
    assert rendered_crd(VARIANTS["crds-unmanaged"], is_install=True) is None
    notes = render_files_of(VARIANTS["crds-unmanaged"])["flowexport-operator/templates/NOTES.txt"]
    assert "kubectl apply --server-side -f crds/flowexport.yaml" in notes


def test_the_chart_and_the_package_have_one_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"  # what the objects are checked on
    assert container(render())["image"] == f"flowexport-operator:{__version__}"


def test_defaults_watch_the_release_namespace_with_a_role_there() -> None:
    objects = render()
    args = parsed_args(objects)
    assert args.namespace == [RELEASE_NAMESPACE] and not args.all_namespaces
    assert args.hold_namespace_access == WATCHED_ROLE
    bindings = of_kind(objects, "RoleBinding")
    assert [b["metadata"]["namespace"] for b in bindings] == [RELEASE_NAMESPACE]
    assert bindings[0]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": WATCHED_ROLE,
    }
    # bound cluster-wide: only the AccountGrants and Namespaces (operator.accountGrants Enforce)
    assert sorted(r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")) == [
        GRANTS_ROLE,
        WATCHED_ROLE,
    ]
    assert [r["metadata"]["name"] for r in of_kind(objects, "ClusterRoleBinding")] == [GRANTS_ROLE]
    off = render({"operator": {"accountGrants": "Off"}})
    assert of_kind(off, "ClusterRoleBinding") == []
    assert [r["metadata"]["name"] for r in of_kind(off, "ClusterRole")] == [WATCHED_ROLE]
    assert parsed_args(off).account_grants == "Off" and args.account_grants == "Enforce"


def test_the_operator_may_hold_its_own_role_binding_and_nothing_else_of_rbac() -> None:
    (rule,) = [
        r
        for r in watched_role(render())["rules"]
        if r["apiGroups"] == ["rbac.authorization.k8s.io"]
    ]
    assert rule == {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["rolebindings"],
        "resourceNames": [WATCHED_ROLE],
        "verbs": ["get", "patch"],
    }
    # Without the chart's RBAC there is no RoleBinding of its own to hold.
    no_rbac = render(VARIANTS["existing-account-no-rbac"])
    assert parsed_args(no_rbac).hold_namespace_access is None


def test_account_grants_are_read_cluster_wide_and_nothing_else() -> None:
    (role,) = [r for r in of_kind(render(), "ClusterRole") if r["metadata"]["name"] == GRANTS_ROLE]
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert verbs == {
        ("flowexport.io", "accountgrants"): {"list", "watch"},
        ("flowexport.io", "accountgrants/status"): {"patch"},
        ("", "namespaces"): {"list", "watch"},
    }


def test_a_namespace_list_gets_a_role_and_binding_in_each() -> None:
    objects = render(VARIANTS["namespace-list"])
    assert parsed_args(objects).namespace == ["security", "payments"]
    assert of_kind(objects, "Role") == []  # one ClusterRole, bound in each
    assert sorted(o["metadata"]["namespace"] for o in of_kind(objects, "RoleBinding")) == [
        "payments",
        "security",
    ]
    for binding in of_kind(objects, "RoleBinding"):
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "fx-flowexport-operator",
            "namespace": RELEASE_NAMESPACE,
        }
    assert sorted(r["metadata"]["name"] for r in of_kind(objects, "ClusterRole")) == [
        GRANTS_ROLE,
        WATCHED_ROLE,
    ]


def test_all_namespaces_uses_a_cluster_role_with_the_same_rules() -> None:
    objects = render(VARIANTS["all-namespaces"])
    assert parsed_args(objects).all_namespaces
    assert parsed_args(objects).hold_namespace_access is None  # a ClusterRoleBinding: no need
    (cluster_role,) = [
        r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] != GRANTS_ROLE
    ]
    assert cluster_role["rules"] == without_access_rule(watched_role(render())["rules"])
    assert of_kind(objects, "Role") == [] == of_kind(objects, "RoleBinding")


def test_secrets_are_watched_and_only_finalizers_status_and_events_are_written() -> None:
    role = watched_role(render())
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    # list+watch with the label selector, get by name; patch only to hold the in-use finalizer
    assert verbs[("", "secrets")] == {"get", "list", "watch", "patch"}
    written = {k for k, v in verbs.items() if v & {"create", "update", "patch", "delete"}}
    assert written == {
        ("flowexport.io", "flowexports"),
        ("flowexport.io", "flowexports/status"),
        ("flowexport.io", "flowexportsets"),  # kopf's finalizer and annotations
        ("flowexport.io", "flowexportsets/status"),
        ("", "secrets"),
        ("", "events"),
        ("rbac.authorization.k8s.io", "rolebindings"),  # its own, by name: its finalizer
    }
    # FlowExports are created and deleted only as FlowExportSets generate them (the admission
    # policy holds the operator to those); FlowExportSets themselves never
    assert verbs[("flowexport.io", "flowexportsets")] == {"list", "watch", "patch"}
    assert all("*" not in str(rule) for rule in role["rules"])


def test_irsa_annotation_lands_on_the_service_account() -> None:
    (account,) = of_kind(render(VARIANTS["irsa"]), "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA_ROLE}
    assert IRSA_ROLE in render_files_of(VARIANTS["irsa"])["flowexport-operator/templates/NOTES.txt"]


def test_an_existing_service_account_and_no_rbac() -> None:
    objects = render(VARIANTS["existing-account-no-rbac"])
    assert of_kind(objects, "ServiceAccount") == []
    assert not any(o["kind"].endswith(("Role", "RoleBinding")) for o in objects)
    spec = deployment(objects)["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "ops"
    with pytest.raises(helm.HelmError, match=r"serviceAccount\.name is required"):
        render({"serviceAccount": {"create": False}})


def test_the_pod_is_locked_down() -> None:
    objects = render()
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(objects)["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert container(objects)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert container(objects)["resources"]["limits"]["memory"]


def test_one_replica_and_no_overlap_on_upgrade() -> None:
    objects = render()
    spec = deployment(objects)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert not any("--shard" in a for a in container_args(objects))
    assert not any(r["metadata"]["name"].endswith("-shards") for r in of_kind(objects, "Role"))


def test_replicas_share_flowexports_through_leases_in_the_release_namespace() -> None:
    objects = render(VARIANTS["replicas"])
    spec = deployment(objects)["spec"]
    assert spec["replicas"] == 3 and spec["strategy"]["type"] == "RollingUpdate"
    args = container_args(objects)
    assert f"--shard-namespace={RELEASE_NAMESPACE}" in args
    assert "--replica-id=$(POD_NAME)" in args and "--shard-lease-seconds=20" in args
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (role,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-shards")]
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["list", "create", "patch", "delete"],
        }
    ]
    assert any("replicas" in p for p in lint_problems({"replicas": 0}))
    assert any("leaseSeconds" in p for p in lint_problems({"sharding": {"leaseSeconds": 1}}))


def test_probes_hit_the_liveness_endpoint_the_operator_serves() -> None:
    objects = render()
    args = parsed_args(objects)
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert args.liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container(objects)[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_metrics_port_service_and_service_monitor_agree() -> None:
    objects = render(VARIANTS["service-monitor"])
    args = parsed_args(objects)
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert args.metrics_port == ports["metrics"] == 9090
    (service,) = of_kind(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        service["spec"]["ports"][0]["name"]
    ]


def test_metrics_off_means_no_port_no_service_no_flag() -> None:
    objects = render(VARIANTS["metrics-off"])
    assert parsed_args(objects).metrics_port is None
    assert of_kind(objects, "Service") == [] == of_kind(objects, "ServiceMonitor")
    assert "metrics" not in {p["name"] for p in container(objects)["ports"]}


def test_operator_settings_reach_the_command_line() -> None:
    objects = render(VARIANTS["digest-and-extras"])
    args = parsed_args(objects)
    assert args.verbose and args.log_format == "plain"
    assert args.settle == 30.0  # extraArgs come last and win
    assert container(objects)["image"] == "registry.example.com/flowexport-operator@sha256:" + (
        "a" * 64
    )
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container(objects)["env"]
    defaults = parsed_args(render())
    assert (defaults.log_format, defaults.resync_seconds, defaults.settle) == ("json", 300, 15)


def test_global_values_are_accepted_and_the_registry_prefixes_the_image() -> None:
    image = container(render(VARIANTS["subchart-globals"]))["image"]
    assert image == f"registry.example.com/flowexport-operator:{__version__}"
    digest = {"repository": "team/flowexport-operator", "digest": "sha256:" + "b" * 64}
    pinned = container(render({"global": {"imageRegistry": "r.example"}, "image": digest}))
    assert pinned["image"] == "r.example/team/flowexport-operator@sha256:" + "b" * 64
    assert any("imageRegistry" in p for p in lint_problems({"global": {"imageRegistry": 5}}))


def test_notes_say_what_is_watched_how_to_label_the_secret_and_the_crd_upgrades() -> None:
    notes = render_files_of(VARIANTS["namespace-list"])["flowexport-operator/templates/NOTES.txt"]
    assert "It reconciles FlowExports in: security, payments." in notes
    # Without the label the FlowExport reports SecretNotLabelled: the label comes with the key.
    assert "label secret pce-api-key flowexport.io/secret-type=pce-credentials" in notes
    assert "`helm upgrade` applies a new chart's schema" in notes
    assert "create-pod-identity-association" in notes  # no IRSA role set: Pod Identity told
    notes_all = render_files_of(VARIANTS["all-namespaces"])[
        "flowexport-operator/templates/NOTES.txt"
    ]
    assert "every namespace" in notes_all


def test_the_chart_packages_and_the_archive_renders_the_same(tmp_path: Any) -> None:
    archive = helm.package(CHART, destination=tmp_path)
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert archive.endswith(f"flowexport-operator-{version}.tgz")
    with helm.Chart.load(archive) as packaged:
        assert packaged.crds == []  # the CRD is a template (see crds.enabled), not crds/
        from_archive = packaged.render({}, name="fx", namespace=RELEASE_NAMESPACE, is_install=True)
    assert from_archive == render_files_of({})


def test_alert_rules_parse_and_read_metrics_the_operator_exports() -> None:
    (rule,) = of_kind(render(VARIANTS["alerts"]), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {
        "FlowExportNotReady",
        "FlowExportLagHigh",
        "FlowExportErrorsPersist",
        "FlowExportOperatorDown",
    }
    exported = exported_sample_names(metrics.REGISTRY)
    runbook = anchors((ROOT / "docs" / "conditions.md").read_text())
    for name, alert in alerts.items():
        used = metric_names(alert["expr"])  # parses it: raises on a syntax error
        assert used and used <= exported, f"{name} reads {used - exported}, not exported"
        assert used == set(re.findall(r"\bflowexport_\w+", alert["expr"]))
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == "docs/conditions.md" and anchor in runbook, f"{name}: no section {anchor}"
    assert alerts["FlowExportNotReady"]["for"] == "30m"
    lag = alerts["FlowExportLagHigh"]["expr"]
    assert lag.count("> 900") == 4 and "flowexport_last_progress_timestamp_seconds" in lag
    for name in ("FlowExportNotReady", "FlowExportLagHigh"):
        assert "flowexport_suspended" in alerts[name]["expr"]
    hosted = render(
        {
            "metrics": {
                "prometheusRule": {
                    "enabled": True,
                    "runbookBaseUrl": "https://git.example.com/fx/blob/v1/docs/conditions.md",
                }
            }
        }
    )
    (rule,) = of_kind(hosted, "PrometheusRule")
    assert {r["annotations"]["runbook_url"] for r in rule["spec"]["groups"][0]["rules"]} == {
        f"https://git.example.com/fx/blob/v1/docs/conditions.md#{a.lower()}" for a in alerts
    }
    with pytest.raises(helm.HelmError, match=r"prometheusRule\.enabled needs metrics\.enabled"):
        render({"metrics": {"enabled": False, "prometheusRule": {"enabled": True}}})


def test_the_network_policy_opens_the_container_ports_and_the_egress_asked_for() -> None:
    objects = render(VARIANTS["network-policy"])
    (policy,) = of_kind(objects, "NetworkPolicy")
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    health, metrics_rule = policy["spec"]["ingress"]
    assert health == {"ports": [{"port": ports["health"], "protocol": "TCP"}]}  # from anywhere
    assert metrics_rule["ports"] == [{"port": ports["metrics"], "protocol": "TCP"}]
    assert metrics_rule["from"] == [MONITORING]
    dns, rest, credentials = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert [p["port"] for p in rest["ports"]] == [443, 7443]
    # Pod Identity's agent and the instance metadata service answer on port 80, on the node.
    assert credentials["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert [t["ipBlock"]["cidr"] for t in credentials["to"]] == [
        "169.254.170.23/32",
        "fd00:ec2::23/128",
        "169.254.169.254/32",
        "fd00:ec2::254/128",
    ]
    (irsa_only,) = of_kind(
        render({"networkPolicy": {"enabled": True, "credentialEndpoints": {"cidrs": []}}}),
        "NetworkPolicy",
    )
    assert len(irsa_only["spec"]["egress"]) == 2
    (without_metrics,) = of_kind(
        render({"networkPolicy": {"enabled": True}, "metrics": {"enabled": False}}),
        "NetworkPolicy",
    )
    assert len(without_metrics["spec"]["ingress"]) == 1
    assert of_kind(render(), "NetworkPolicy") == []


def test_allowed_pce_hosts_reach_the_operator() -> None:
    given = parsed_args(render(VARIANTS["digest-and-extras"])).allowed_pce_hosts
    assert given == ["pce.example.com", "pce2.example.com:8443", "[fd00:1::5]:9443"]
    assert [parse_host_port(h) for h in given] == [
        ("pce.example.com", 443),
        ("pce2.example.com", 8443),
        ("[fd00:1::5]", 9443),
    ]
    # The default allows no PCE: the operator sends no key until the install names one.
    assert parsed_args(render({})).allowed_pce_hosts == []
    for wrong in ("a b", "*", "pce.example.com:", "pce.example.com:port", "https://pce"):
        problems = lint_problems({"operator": {"allowedPceHosts": [wrong]}})
        assert any("allowedPceHosts" in p for p in problems), wrong


def test_pods_fit_real_clusters() -> None:
    objects = render(VARIANTS["operations"])
    pod = deployment(objects)["spec"]["template"]
    spread = pod["spec"]["topologySpreadConstraints"]
    selector = deployment(objects)["spec"]["selector"]
    assert spread[0]["labelSelector"] == selector  # filled in when not given
    assert spread[1]["labelSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "flowexport-operator"}
    }
    assert pod["spec"]["affinity"] == VARIANTS["operations"]["affinity"]
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"] == VARIANTS["operations"]["podAnnotations"]
    (budget,) = of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 2 and "maxUnavailable" not in budget["spec"]
    assert budget["spec"]["selector"] == selector
    (default_budget,) = of_kind(
        render({"podDisruptionBudget": {"enabled": True}}), "PodDisruptionBudget"
    )
    assert default_budget["spec"]["maxUnavailable"] == 1  # one replica: a drain is not blocked
    assert of_kind(render(), "PodDisruptionBudget") == []


def test_common_labels_are_on_every_object_and_never_in_a_selector() -> None:
    objects = render(VARIANTS["operations"])
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["team"] == "secops" and labels["cost-centre"] == "cc-42", obj["kind"]
    pod = deployment(objects)["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "secops"
    assert "team" not in deployment(objects)["spec"]["selector"]["matchLabels"]


def test_a_corporate_ca_is_mounted_for_aws_ca_bundle() -> None:
    objects = render(VARIANTS["operations"])
    spec = deployment(objects)["spec"]["template"]["spec"]
    assert {"name": "corporate-ca", "configMap": {"name": "corporate-ca"}} in spec["volumes"]
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert mounts["corporate-ca"] == {
        "name": "corporate-ca",
        "mountPath": "/etc/flowexport/ca",
        "readOnly": True,
    }
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert env["AWS_CA_BUNDLE"].startswith(mounts["corporate-ca"]["mountPath"] + "/")


def test_the_dashboard_configmap_carries_the_dashboard_for_the_sidecar() -> None:
    (config,) = of_kind(render(VARIANTS["operations"]), "ConfigMap")
    assert config["metadata"]["namespace"] == "monitoring"
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    shipped = (CHART / "dashboards" / "flowexport.json").read_text()
    assert json.loads(config["data"]["flowexport.json"]) == json.loads(shipped)
    assert of_kind(render(), "ConfigMap") == []


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    paths = {}
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        paths[path] = sub
        paths.update(_schema_paths(sub, path))
    return paths


def _value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, value in values.items():
        path = f"{prefix}.{name}" if prefix else name
        paths.add(path)
        if isinstance(value, dict) and value:
            paths |= _value_paths(value, path)
    return paths


def test_every_value_is_in_the_schema_with_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    described = _schema_paths(schema)
    free_form = {"resources", "podSecurityContext", "securityContext", "global", "affinity"}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in _value_paths(values):
        if path.split(".")[0] in free_form and "." in path:
            continue  # a Kubernetes object or a parent's values, passed through as they are
        parent = described.get(path.rsplit(".", 1)[0], {})
        if path not in described and parent.get("additionalProperties"):
            continue  # a key of a map value (grafanaDashboard.labels.grafana_dashboard)
        assert path in described, f"values.yaml has {path}, values.schema.json lacks it"
    for path, sub in described.items():
        assert sub.get("description"), f"values.schema.json: {path} has no description"


def test_the_admission_policies_bind_the_operators_writes() -> None:
    """Issue 23 item 9: what RBAC cannot express (by label, by what a write changes) is a
    ValidatingAdmissionPolicy per resource, bound with Deny, matching only the operator's
    ServiceAccount (tests/e2e/test_rbac.py runs the operator under them)."""
    objects = render({"replicas": 2})
    policies = of_kind(objects, "ValidatingAdmissionPolicy")
    bindings = of_kind(objects, "ValidatingAdmissionPolicyBinding")
    assert sorted(p["metadata"]["name"].rsplit("-", 1)[1] for p in policies) == [
        "access",  # its own RoleBinding in each watched namespace: finalizers only
        "flowexports",
        "leases",
        "secrets",
    ]
    all_namespaces = render({**VARIANTS["all-namespaces"], "replicas": 2})
    assert not any(
        p["metadata"]["name"].endswith("-access")
        for p in of_kind(all_namespaces, "ValidatingAdmissionPolicy")
    )
    assert {b["spec"]["policyName"] for b in bindings} == {p["metadata"]["name"] for p in policies}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings)
    (account,) = of_kind(objects, "ServiceAccount")
    user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{account['metadata']['name']}"
    for policy in policies:
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f"request.userInfo.username == '{user}'"
        assert policy["spec"]["failurePolicy"] == "Fail"
    # Cluster-scoped: two releases (or one in two namespaces) never share a name.
    other = of_kind(render({"replicas": 2}, namespace="other"), "ValidatingAdmissionPolicy")
    assert not {p["metadata"]["name"] for p in other} & {p["metadata"]["name"] for p in policies}
    assert (
        of_kind(
            render({"rbac": {"admissionPolicy": {"enabled": False}}}), "ValidatingAdmissionPolicy"
        )
        == []
    )
    assert of_kind(render({"rbac": {"create": False}}), "ValidatingAdmissionPolicyBinding") == []


def test_secret_names_narrow_the_secrets_rule_to_get_and_patch_on_those_names() -> None:
    values = {"rbac": {"secretNames": ["pce-api-key", "aws-keys"]}}
    objects = render(values)
    (rule,) = [r for r in watched_role(objects)["rules"] if "secrets" in r["resources"]]
    assert rule == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["pce-api-key", "aws-keys"],
        "verbs": ["get", "patch"],
    }
    assert parsed_args(objects).read_secrets_by_name
    assert not parsed_args(render({})).read_secrets_by_name
    (default,) = [r for r in watched_role(render({}))["rules"] if "secrets" in r["resources"]]
    assert default["verbs"] == ["get", "list", "watch", "patch"] and "resourceNames" not in default
