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
{{- define "syncwatch.postgresqlDir" -}}/var/run/secrets/syncwatch/postgresql{{- end }}
{{- define "syncwatch.databasesDir" -}}/var/run/secrets/syncwatch/databases{{- end }}

{{/* The storage and snapshot backends the config asks for, and whether anything lives on the data volume. */}}
{{- define "syncwatch.ledgerBackend" -}}
{{- $storage := default dict (default dict .Values.config).storage -}}
{{- default "sqlite" $storage.backend -}}
{{- end }}

{{- define "syncwatch.snapshotsLocal" -}}
{{- $snap := default dict (default dict .Values.config).snapshots -}}
{{- $on := true -}}
{{- if hasKey $snap "enabled" }}{{ $on = $snap.enabled }}{{ end -}}
{{- if and $on (not (hasPrefix "s3://" (default "sqlite" $snap.backend))) }}true{{ end -}}
{{- end }}

{{/* "true" when the SQLite ledger or the SQLite snapshot store keeps data on the data volume. */}}
{{- define "syncwatch.needsDataVolume" -}}
{{- if or (eq (include "syncwatch.ledgerBackend" .) "sqlite") (include "syncwatch.snapshotsLocal" .) }}true{{ end -}}
{{- end }}

{{/*
The reconcilers' database Secrets (databaseSecrets: reconciler -> database -> Secret), as a list
of dicts {reconciler, database, secret, key, env, volume, dir}, sorted; fails on a reconciler or
database the config does not have, so a typo cannot leave a database without its password.
*/}}
{{- define "syncwatch.databaseSecretList" -}}
{{- $v := .Values -}}
{{- $reconcilers := dict -}}
{{- range (default list (default dict $v.config).reconcilers) }}
{{- $_ := set $reconcilers .name (default dict .databases) -}}
{{- end -}}
{{- $out := list -}}
{{- $i := 0 -}}
{{- range $rname := keys (default dict $v.databaseSecrets) | sortAlpha }}
{{- $dbs := get $v.databaseSecrets $rname -}}
{{- if not (hasKey $reconcilers $rname) }}
{{- fail (printf "databaseSecrets.%s: config.reconcilers has no reconciler named %q" $rname $rname) }}
{{- end }}
{{- range $dname := keys $dbs | sortAlpha }}
{{- $ref := get $dbs $dname -}}
{{- $db := get (get $reconcilers $rname) $dname -}}
{{- if not $db }}
{{- fail (printf "databaseSecrets.%s.%s: reconciler %q has no database named %q under databases" $rname $dname $rname $dname) }}
{{- end }}
{{- if or $db.password_file $db.password_env }}
{{- fail (printf "databaseSecrets.%s.%s: config.reconcilers[%s].databases.%s already sets password_file or password_env; set one or the other" $rname $dname $rname $dname) }}
{{- end }}
{{- $out = append $out (dict "reconciler" $rname "database" $dname "secret" $ref.existingSecret "key" (default "password" $ref.key) "env" (default "" $ref.env) "volume" (printf "syncwatch-db-%d" $i) "dir" (printf "%s/%s/%s" (include "syncwatch.databasesDir" $) $rname $dname)) -}}
{{- $i = add1 $i -}}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Checks across values that the schema cannot express. Each failure names the keys to change.
Rendered by the ConfigMap, which both modes render.
*/}}
{{- define "syncwatch.validate" -}}
{{- $v := .Values -}}
{{- $backend := include "syncwatch.ledgerBackend" . -}}
{{- $storage := default dict (default dict $v.config).storage -}}
{{- $pg := default dict $storage.postgresql -}}
{{- $replicas := int $v.replicaCount -}}
{{- if gt $replicas 1 }}
{{- if eq $v.mode "sidecar" }}
{{- fail (printf "replicaCount: %d: sidecar mode runs one syncwatch in each integration pod; scale the integration's own Deployment, not replicaCount" $replicas) }}
{{- end }}
{{- if ne $backend "postgresql" }}
{{- fail (printf "replicaCount: %d replicas need the ledger in PostgreSQL: the embedded SQLite ledger is one file on one pod's volume. Set config.storage.backend: postgresql and postgresql.dsnSecret.name (README: Running against PostgreSQL), or replicaCount: 1" $replicas) }}
{{- end }}
{{- if include "syncwatch.snapshotsLocal" . }}
{{- fail (printf "replicaCount: %d replicas need the payload snapshots in S3: the sqlite snapshot store is one file on one pod's volume. Set config.snapshots.backend: s3://bucket/prefix (or config.snapshots.enabled: false), or replicaCount: 1" $replicas) }}
{{- end }}
{{- end }}
{{- if and $v.postgresql.dsnSecret.name (ne $backend "postgresql") }}
{{- fail "postgresql.dsnSecret.name is set but config.storage.backend is not postgresql: set config.storage.backend: postgresql, or remove the Secret" }}
{{- end }}
{{- if eq $backend "postgresql" }}
{{- if and $v.postgresql.dsnSecret.name (or $pg.dsn_file $pg.dsn_env) }}
{{- fail "config.storage.postgresql.dsn_file / dsn_env and postgresql.dsnSecret.name are both set: the chart mounts the Secret and sets the key itself; keep one" }}
{{- end }}
{{- if not (or $v.postgresql.dsnSecret.name $pg.dsn_file $pg.dsn_env) }}
{{- fail "config.storage.backend: postgresql needs the DSN from a Secret: set postgresql.dsnSecret.name (and .key) to an existing Secret holding postgresql://user:password@host:5432/db" }}
{{- end }}
{{- end }}
{{- $pdb := $v.podDisruptionBudget -}}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- $_ := include "syncwatch.databaseSecretList" . -}}
{{- end }}

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
{{- with $v.postgresql.dsnSecret.name }}
{{- $pg := deepCopy (default dict $storage.postgresql) -}}
{{- if $v.postgresql.dsnSecret.env }}
{{- $_ := set $pg "dsn_env" $v.postgresql.dsnSecret.env -}}
{{- else }}
{{- $_ := set $pg "dsn_file" (printf "%s/%s" (include "syncwatch.postgresqlDir" $) $v.postgresql.dsnSecret.key) -}}
{{- end }}
{{- $_ := set $storage "postgresql" $pg -}}
{{- end }}
{{- $_ := set $cfg "storage" $storage -}}
{{- $dbSecrets := include "syncwatch.databaseSecretList" . | fromJsonArray -}}
{{- if $dbSecrets }}
{{- $reconcilers := list -}}
{{- range $cfg.reconcilers }}
{{- $r := . -}}
{{- range $dbSecrets }}
{{- if eq .reconciler $r.name }}
{{- $db := get $r.databases .database -}}
{{- if .env }}
{{- $_ := set $db "password_env" .env -}}
{{- else }}
{{- $_ := set $db "password_file" (printf "%s/%s" .dir .key) -}}
{{- end }}
{{- end }}
{{- end }}
{{- $reconcilers = append $reconcilers $r -}}
{{- end }}
{{- $_ := set $cfg "reconcilers" $reconcilers -}}
{{- end }}
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
    {{- if and $v.postgresql.dsnSecret.name $v.postgresql.dsnSecret.env }}
    - name: {{ $v.postgresql.dsnSecret.env }}
      valueFrom:
        secretKeyRef:
          name: {{ $v.postgresql.dsnSecret.name }}
          key: {{ $v.postgresql.dsnSecret.key }}
    {{- end }}
    {{- range (include "syncwatch.databaseSecretList" . | fromJsonArray) }}
    {{- if .env }}
    - name: {{ .env }}
      valueFrom:
        secretKeyRef:
          name: {{ .secret }}
          key: {{ .key }}
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
    {{- if and $v.postgresql.dsnSecret.name (not $v.postgresql.dsnSecret.env) }}
    - name: syncwatch-postgresql
      mountPath: {{ include "syncwatch.postgresqlDir" . }}
      readOnly: true
    {{- end }}
    {{- range (include "syncwatch.databaseSecretList" . | fromJsonArray) }}
    {{- if not .env }}
    - name: {{ .volume }}
      mountPath: {{ .dir }}
      readOnly: true
    {{- end }}
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
{{- if and $v.postgresql.dsnSecret.name (not $v.postgresql.dsnSecret.env) }}
- name: syncwatch-postgresql
  secret:
    secretName: {{ $v.postgresql.dsnSecret.name }}
    items:
      - key: {{ $v.postgresql.dsnSecret.key }}
        path: {{ $v.postgresql.dsnSecret.key }}
    defaultMode: {{ if eq $v.mode "sidecar" }}0444{{ else }}0440{{ end }}
{{- end }}
{{- range (include "syncwatch.databaseSecretList" . | fromJsonArray) }}
{{- if not .env }}
- name: {{ .volume }}
  secret:
    secretName: {{ .secret }}
    items:
      - key: {{ .key }}
        path: {{ .key }}
    defaultMode: {{ if eq $v.mode "sidecar" }}0444{{ else }}0440{{ end }}
{{- end }}
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
{{- if eq .Values.mode "sidecar" }}
{{- /* Each sidecar keeps its own ledger: the alert rules aggregate replicas over instance and pod,
       and this label keeps the sidecars of one job apart (alerts/generate.py, replica_labels). */}}
- action: replace
  sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: ledger
{{- end }}
{{- with .Values.monitoring.relabelings }}
{{ toYaml . }}
{{- end }}
{{- end }}
