{{/* Names and labels shared by every template. */}}

{{- define "flowexport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flowexport.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flowexport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowexport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flowexport.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flowexport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: flowexport
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "flowexport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowexport.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image; global.imageRegistry (set by a parent chart) prefixes the repository. */}}
{{- define "flowexport.image" -}}
{{- $repository := .Values.image.repository }}
{{- $registry := get (.Values.global | default dict) "imageRegistry" }}
{{- if $registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces whose FlowExports are reconciled, when scope is "namespaces". */}}
{{- define "flowexport.watchedNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* The rules the operator needs in every namespace it watches. Each one is exercised by
     tests/e2e/test_rbac.py, which fails if the operator makes a request these do not allow. */}}
{{- define "flowexport.namespacedRules" -}}
# FlowExports: kopf lists and watches them, and patches finalizers and its own annotations;
# the operator annotates flowexport.io/cursor-since and removes a consumed resume-from. It
# creates, updates (spec) and deletes the FlowExports FlowExportSets generate, and only those
# (labelled flowexport.io/set and owned by a FlowExportSet: the admission policy holds it).
- apiGroups: ["flowexport.io"]
  resources: ["flowexports"]
  verbs: ["list", "watch", "patch", "create", "delete"]
# Status: conditions, counts and the ingestion cursor.
- apiGroups: ["flowexport.io"]
  resources: ["flowexports/status"]
  verbs: ["patch"]
# FlowExportSets: kopf lists and watches them and patches its finalizer and annotations; the
# operator writes their status (coverage, conditions).
- apiGroups: ["flowexport.io"]
  resources: ["flowexportsets"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["flowexport.io"]
  resources: ["flowexportsets/status"]
  verbs: ["patch"]
{{- if .Values.rbac.secretNames }}
# The PCE API key and the AWS keys named below, and no other Secret: read by name (no list or
# watch), patched to hold the finalizer flowexport.io/in-use on AWS keys until the clean-up.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: {{ .Values.rbac.secretNames | toJson }}
  verbs: ["get", "patch"]
{{- else }}
# The PCE API key and the AWS keys (if any) named by each FlowExport: listed and watched only
# with the label selector flowexport.io/secret-type (so only Secrets marked for the operator are
# ever sent to it; `get` alone already reads any Secret by name), read by name when unmarked;
# patched to hold the finalizer flowexport.io/in-use on AWS keys until the clean-up used them.
# RBAC cannot select by label: rbac.secretNames narrows this to names, and the admission
# policies (templates/admissionpolicy.yaml) let the patch touch only labelled Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
# Events on FlowExports for state transitions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
