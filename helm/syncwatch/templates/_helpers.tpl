{{/*
Every helper here reads only .Values and .Release (plus .Chart when present), so an
integration's chart can call the sidecar helpers with
  (dict "Values" .Values.syncwatch "Release" .Release)
and get the same names, config and checksum this chart renders for itself.
*/}}

{{- define "syncwatch.name" -}}
{{- default "syncwatch" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "syncwatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "syncwatch.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "syncwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "syncwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "syncwatch.labels" -}}
{{ include "syncwatch.selectorLabels" . }}
{{- with .Chart }}
helm.sh/chart: {{ printf "%s-%s" .Name .Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service | default "Helm" }}
app.kubernetes.io/part-of: syncwatch
{{- end }}

{{- define "syncwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "syncwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "syncwatch.image" -}}
{{- $appVersion := "" -}}
{{- with .Chart }}{{ $appVersion = .AppVersion }}{{ end -}}
{{- $tag := .Values.image.tag | default $appVersion -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else if $tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- else }}
{{- fail "image.tag: no tag and no chart appVersion; pass \"Chart\" .Subcharts.syncwatch.Chart to the sidecar templates or set image.tag" }}
{{- end }}
{{- end }}

{{/* Where the pod keeps things; the image and the config agree on these paths. */}}
{{- define "syncwatch.configDir" -}}/etc/syncwatch{{- end }}
{{- define "syncwatch.dataDir" -}}/var/lib/syncwatch{{- end }}
{{- define "syncwatch.apiTokenDir" -}}/var/run/secrets/syncwatch/api-token{{- end }}

{{/*
The syncwatch config file (exporter/config/models.py's shape). .Values.config is passed through;
the keys that must agree with the pod spec (listen, storage paths, api token file) are set here.
In sidecar mode OTLP binds to localhost only: the integration's SDK shares the pod's network.
*/}}
{{- define "syncwatch.config" -}}
{{- $v := .Values -}}
{{- $cfg := deepCopy (default dict $v.config) -}}
{{- $otlpHost := ternary "127.0.0.1" "0.0.0.0" (eq $v.mode "sidecar") -}}
{{- $_ := set $cfg "listen" (dict
      "http" (printf "0.0.0.0:%d" (int $v.ports.http))
      "otlp_grpc" (printf "%s:%d" $otlpHost (int $v.ports.otlpGrpc))
      "otlp_http" (printf "%s:%d" $otlpHost (int $v.ports.otlpHttp))) -}}
{{- $storage := deepCopy (default dict $cfg.storage) -}}
{{- $_ := set $storage "data_dir" (include "syncwatch.dataDir" .) -}}
{{- $_ := set $cfg "storage" $storage -}}
{{- if $v.apiToken.existingSecret -}}
{{- $_ := set $cfg "api" (dict "token_file" (printf "%s/%s" (include "syncwatch.apiTokenDir" .) $v.apiToken.key)) -}}
{{- end -}}
{{- toYaml $cfg }}
{{- end }}

{{- define "syncwatch.configChecksum" -}}
{{- include "syncwatch.config" . | sha256sum }}
{{- end }}

{{/*
The syncwatch container. Used by this chart's Deployment and, in sidecar mode, by the
integration's chart (see "syncwatch.sidecar.container").
*/}}
{{- define "syncwatch.container" -}}
{{- $v := .Values -}}
- name: syncwatch
  image: {{ include "syncwatch.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if and (eq $v.mode "sidecar") $v.sidecar.native }}
  # A native sidecar (init container that keeps running): up before the integration starts
  # sending, and stopped after it, so the last spans are not lost.
  restartPolicy: Always
  {{- end }}
  command: ["syncwatch"]
  args: ["run", "--config", "{{ include "syncwatch.configDir" . }}/config.yaml"]
  ports:
    - name: sw-http
      containerPort: {{ int $v.ports.http }}
      protocol: TCP
    - name: sw-otlp-grpc
      containerPort: {{ int $v.ports.otlpGrpc }}
      protocol: TCP
    - name: sw-otlp-http
      containerPort: {{ int $v.ports.otlpHttp }}
      protocol: TCP
  env:
    - name: TMPDIR
      value: /tmp
    {{- range $name, $ref := $v.credentials }}
    {{- if $ref.existingSecret }}
    - name: {{ $ref.env }}
      valueFrom:
        secretKeyRef:
          name: {{ $ref.existingSecret }}
          key: {{ $ref.key }}
    {{- end }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.probes.liveness }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: sw-http
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /* A sidecar's readiness gates the integration's pod: off there unless asked for. */}}
  {{- with (and (or (ne $v.mode "sidecar") $v.sidecar.readinessProbe) $v.probes.readiness) }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: sw-http
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.probes.startup }}
  startupProbe:
    httpGet:
      path: /healthz
      port: sw-http
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: syncwatch-config
      mountPath: {{ include "syncwatch.configDir" . }}
      readOnly: true
    - name: syncwatch-data
      mountPath: {{ include "syncwatch.dataDir" . }}
    - name: syncwatch-tmp
      mountPath: /tmp
    {{- if $v.apiToken.existingSecret }}
    - name: syncwatch-api-token
      mountPath: {{ include "syncwatch.apiTokenDir" . }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The pod volumes the container mounts; the data volume is chosen by the caller. */}}
{{- define "syncwatch.volumes" -}}
{{- $v := .Values -}}
- name: syncwatch-config
  configMap:
    name: {{ include "syncwatch.fullname" . }}
- name: syncwatch-tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
{{- if $v.apiToken.existingSecret }}
- name: syncwatch-api-token
  secret:
    secretName: {{ $v.apiToken.existingSecret }}
    items:
      - key: {{ $v.apiToken.key }}
        path: {{ $v.apiToken.key }}
    {{- /* Standalone: group-readable through fsGroup. A sidecar cannot rely on the integration's fsGroup. */}}
    defaultMode: {{ if eq $v.mode "sidecar" }}0444{{ else }}0440{{ end }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ---------------- Sidecar mode: the integration's chart includes these. ---------------- */}}

{{/*
One container list item. In the integration's pod template:
  containers:
    {{- include "syncwatch.sidecar.container" (dict "Values" .Values.syncwatch "Release" .Release) | nindent 8 }}
(with sidecar.native=true put it under initContainers instead: Kubernetes >= 1.29.)
*/}}
{{- define "syncwatch.sidecar.container" -}}
{{- include "syncwatch.container" . }}
{{- end }}

{{/* The volumes the sidecar mounts: config, a scratch data dir (emptyDir), /tmp, API token. */}}
{{- define "syncwatch.sidecar.volumes" -}}
{{- include "syncwatch.volumes" . }}
- name: syncwatch-data
  emptyDir:
    sizeLimit: {{ .Values.sidecar.dataSizeLimit }}
{{- end }}

{{/* Pod labels: the PodMonitor of sidecar mode selects pods by this label. */}}
{{- define "syncwatch.sidecar.podLabels" -}}
syncwatch/sidecar: {{ include "syncwatch.fullname" . }}
{{- end }}

{{/* Pod annotations: restart the pod when the syncwatch config changes. */}}
{{- define "syncwatch.sidecar.podAnnotations" -}}
checksum/syncwatch-config: {{ include "syncwatch.configChecksum" . }}
{{- end }}

{{/* Relabelings shared by ServiceMonitor and PodMonitor: job="syncwatch", as the alert rules expect. */}}
{{- define "syncwatch.scrapeRelabelings" -}}
{{- if .Values.monitoring.jobLabel }}
- action: replace
  targetLabel: job
  replacement: {{ .Values.monitoring.jobLabel }}
{{- end }}
{{- with .Values.monitoring.relabelings }}
{{ toYaml . }}
{{- end }}
{{- end }}
