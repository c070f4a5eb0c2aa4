{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "mermin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release name already contains it. */}}
{{- define "mermin.fullname" -}}
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

{{- define "mermin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "mermin.labels" -}}
helm.sh/chart: {{ include "mermin.chart" . }}
{{ include "mermin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end }}

{{/* Labels the DaemonSet selects its pods by (immutable after install). */}}
{{- define "mermin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mermin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mermin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mermin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@sha256:... when the tag is a digest. */}}
{{- define "mermin.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository }}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repo $tag }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* The config file, rendered (content may reference chart values). */}}
{{- define "mermin.config" -}}
{{- tpl (required "config.content is required" .Values.config.content) . }}
{{- end }}

{{/* Capabilities: the configured set, plus what entering the host netns needs without hostNetwork. */}}
{{- define "mermin.capabilities" -}}
{{- $caps := concat .Values.securityContext.capabilities .Values.securityContext.extraCapabilities }}
{{- if not .Values.hostNetwork }}
{{- $caps = concat $caps (list "SYS_ADMIN" "SYS_PTRACE") }}
{{- end }}
{{- toYaml (uniq $caps) }}
{{- end }}

{{/*
The probes and the scrape annotation use .Values.ports: an HCL config must serve the health and
metrics endpoints on those ports (a block left out means the agent's defaults, 8080 and 10250).
Fails the render with a clear message instead of shipping pods that never become ready.
*/}}
{{- define "mermin.checkPorts" -}}
{{- if hasSuffix ".hcl" .Values.config.fileName }}
{{- $config := include "mermin.config" . }}
{{- range $block, $spec := dict "server" (list $.Values.ports.health 8080 "ports.health") "metrics" (list $.Values.ports.metrics 10250 "ports.metrics") }}
{{- $want := index $spec 0 | int }}
{{- $port := index $spec 1 | int }}
{{- $found := regexFind (printf "(?s)internal\\s+\"%s\"\\s*\\{[^}]*?\\bport\\s*=\\s*[0-9]+" $block) $config }}
{{- if $found }}
{{- $port = regexFind "[0-9]+$" $found | int }}
{{- end }}
{{- if ne $port $want }}
{{- fail (printf "config.content serves %s on port %d but %s is %d (the probes and scraping use it): write internal \"%s\" { port = {{ .Values.%s }} } in config.content" $block $port (index $spec 2) $want $block (index $spec 2)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
