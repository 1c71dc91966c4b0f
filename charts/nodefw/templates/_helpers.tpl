{{/*
Common labels. Call with (dict "root" $ "component" "agent").
*/}}
{{- define "nodefw.labels" -}}
app.kubernetes.io/name: nodefw
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
Selector labels: the same as config/default's, so that either install
manages the same pods.
*/}}
{{- define "nodefw.selectorLabels" -}}
app.kubernetes.io/name: nodefw
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The agent's service account, which the admission policy names. */}}
{{- define "nodefw.agentServiceAccount" -}}
nodefw-agent
{{- end }}

{{/* An image reference from {repository, tag}. */}}
{{- define "nodefw.image" -}}
{{- if .tag -}}
{{ .repository }}:{{ .tag }}
{{- else -}}
{{ .repository }}
{{- end -}}
{{- end }}
