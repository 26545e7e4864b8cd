{{- define "meshchat.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
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
