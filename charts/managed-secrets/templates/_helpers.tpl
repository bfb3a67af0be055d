{{- define "managed-secrets.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "managed-secrets.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "managed-secrets.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- define "managed-secrets.labels" -}}
app.kubernetes.io/name: managed-secrets
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "managed-secrets.selector" -}}
app.kubernetes.io/name: managed-secrets
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "managed-secrets.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
{{- define "managed-secrets.leaseName" -}}
{{ .Values.leaderElection.leaseName | default (printf "%s-leader" (include "managed-secrets.fullname" .)) }}
{{- end -}}
{{- define "managed-secrets.leaseNamespace" -}}
{{ .Values.leaderElection.namespace | default .Release.Namespace }}
{{- end -}}
{{- define "managed-secrets.webhookConfiguration" -}}
{{ printf "%s-%s" .Release.Namespace (include "managed-secrets.fullname" .) }}
{{- end -}}
