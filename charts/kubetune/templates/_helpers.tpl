{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name, with the chart name appended unless it already contains it. */}}
{{- define "kubetune.fullname" -}}
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

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion; the bare repository when it
carries a digest. Call with (dict "image" .Values.images.NAME "root" $). */}}
{{- define "kubetune.image" -}}
{{- if contains "@" .image.repository }}
{{- .image.repository }}
{{- else }}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "kubetune.progressKeySecret" -}}
{{- default (printf "%s-progress-key" (include "kubetune.fullname" .)) .Values.progress.existingSecret }}
{{- end }}

{{/*
Namespaces that get per-namespace objects (workload ServiceAccount, Kueue LocalQueue):
the feature's own list, else the watched namespaces. Call with (dict "root" $ "list" ... "what" ...).
*/}}
{{- define "kubetune.workloadNamespaces" -}}
{{- $namespaces := .list | default .root.Values.watch.namespaces }}
{{- if not $namespaces }}
{{- fail (printf "%s: list the namespaces it goes into (%s.namespaces), or use watch.mode=namespaced with watch.namespaces" .what .what) }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}

{{/* The operator's rules in one namespace; cluster mode adds CRD and namespace discovery. */}}
{{- define "kubetune.operatorRules" -}}
# Exactly what the operator calls: the integration tests run it under these rules on kube-apiserver,
# and any request RBAC refuses fails them.
# Its handlers react to events and keep no state on the resources: status is the only write.
- apiGroups: ["kubetune.dev"]
  resources: ["preferencedatasets", "finetunejobs", "evalruns"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubetune.dev"]
  resources: ["preferencedatasets/status", "finetunejobs/status", "evalruns/status"]
  verbs: ["patch"]
# Children carry blocking owner references; clusters with OwnerReferencesPermissionEnforcement
# (e.g. OpenShift) require update on the owner's finalizers for that.
- apiGroups: ["kubetune.dev"]
  resources: ["preferencedatasets/finalizers", "finetunejobs/finalizers", "evalruns/finalizers"]
  verbs: ["update"]
# patch: a FineTuneJob's suspend. Children are deleted by garbage collection, never by the operator.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
# get: a child that exists already (409) is read back to check that this resource owns it.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "create"]
# Only the per-resource progress token Secret is written; Secrets are never read.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# Termination messages of a Job's pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
The scheduling defaults of training and evaluation pods as the operator reads them
(KUBETUNE_POD_DEFAULTS): JSON with only the fields set; empty when none is.
*/}}
{{- define "kubetune.podDefaults" -}}
{{- $defaults := dict -}}
{{- range $work := list "training" "evaluation" -}}
{{- $values := index $.Values.workloads $work -}}
{{- $set := dict -}}
{{- range $field := list "nodeSelector" "tolerations" "affinity" "priorityClassName" -}}
{{- with index $values $field -}}{{- $_ := set $set $field . -}}{{- end -}}
{{- end -}}
{{- if $set -}}{{- $_ := set $defaults $work $set -}}{{- end -}}
{{- end -}}
{{- if $defaults -}}{{- toJson $defaults -}}{{- end -}}
{{- end -}}
