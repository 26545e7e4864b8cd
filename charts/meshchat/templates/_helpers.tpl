{{- define "meshchat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "meshchat.labels" -}}
app.kubernetes.io/name: meshchat-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "meshchat.selector" -}}
app.kubernetes.io/name: meshchat-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meshchat.serviceAccount" -}}
{{- default (include "meshchat.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Namespaces where ChatAgents run: the list given, else watchNamespaces, else the release's. */}}
{{- define "meshchat.workerNamespaces" -}}
{{- .Values.networkPolicy.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) | toJson -}}
{{- end -}}
