{{/* The chart's name. */}}
{{- define "imaging-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, the prefix of every object's name. */}}
{{- define "imaging-hub.fullname" -}}
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

{{/* A service's object name: (list root component); the full name is cut, never the component. */}}
{{- define "imaging-hub.componentName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $prefix := include "imaging-hub.fullname" $root | trunc (int (sub 62 (len $component))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $component }}
{{- end }}

{{- define "imaging-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "imaging-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imaging-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "imaging-hub.labels" -}}
helm.sh/chart: {{ include "imaging-hub.chart" . }}
{{ include "imaging-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imaging-hub
{{- end }}

{{/* Selector labels of one service: (list root component). */}}
{{- define "imaging-hub.componentSelectorLabels" -}}
{{ include "imaging-hub.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "imaging-hub.componentLabels" -}}
{{ include "imaging-hub.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "imaging-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imaging-hub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "imaging-hub.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret the chart creates from values (its name; it exists only if a value is set). */}}
{{- define "imaging-hub.secretName" -}}
{{- include "imaging-hub.fullname" . }}
{{- end }}

{{/* The blob store's S3 URL (blobs.s3.url), empty when the blobs live on a volume. */}}
{{- define "imaging-hub.blobUrl" -}}
{{- dig "s3" "url" "" .Values.blobs }}
{{- end }}

{{/* "true" when the shared read models (readModels) are set: a projector, and gateways that read them. */}}
{{- define "imaging-hub.sharedReadModels" -}}
{{- $r := .Values.readModels | default dict }}
{{- if or $r.url $r.existingSecret }}true{{ end }}
{{- end }}

{{/* HUB_READ_MODELS_URL, from readModels.existingSecret or the chart's Secret. */}}
{{- define "imaging-hub.readModelsEnv" -}}
{{- $r := .Values.readModels -}}
- name: HUB_READ_MODELS_URL
  valueFrom:
    secretKeyRef:
      {{- if $r.existingSecret }}
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretKey }}
      {{- else }}
      name: {{ include "imaging-hub.secretName" . }}
      key: read-models-url
      {{- end }}
{{- end }}

{{/* The blob directory's mount path in the pods that read or write the original DICOM files. */}}
{{- define "imaging-hub.blobDir" -}}
/var/lib/hub-blobs
{{- end }}

{{/* The ReadWriteMany PersistentVolumeClaim of the blob directory: blobs.existingClaim or the chart's. */}}
{{- define "imaging-hub.blobsClaimName" -}}
{{- .Values.blobs.existingClaim | default (include "imaging-hub.componentName" (list . "blobs")) }}
{{- end }}

{{/* Rules the schema cannot state clearly: each fails the render with the values to fix. */}}
{{- define "imaging-hub.validate" -}}
{{- $v := .Values }}
{{- if eq (empty $v.postgres.url) (empty $v.postgres.existingSecret) }}
{{- fail "postgres: set exactly one of postgres.url and postgres.existingSecret" }}
{{- end }}
{{- $r := $v.readModels | default dict }}
{{- if and $r.url $r.existingSecret }}
{{- fail "readModels: set at most one of readModels.url and readModels.existingSecret" }}
{{- end }}
{{- $hs256 := or $v.auth.jwtSecret $v.auth.existingSecret }}
{{- if and $v.auth.jwtSecret $v.auth.existingSecret }}
{{- fail "auth: set only one of auth.jwtSecret and auth.existingSecret" }}
{{- end }}
{{- if eq (empty $hs256) (empty $v.auth.jwksUrl) }}
{{- fail "auth: set exactly one of auth.jwtSecret (or auth.existingSecret) and auth.jwksUrl" }}
{{- end }}
{{- if $v.secrets.existingSecret }}
{{- if or $v.secrets.patientKey $v.secrets.deidKey }}
{{- fail "secrets: set either secrets.existingSecret or secrets.patientKey and secrets.deidKey, not both" }}
{{- end }}
{{- else if not (and $v.secrets.patientKey $v.secrets.deidKey) }}
{{- fail "secrets: set secrets.patientKey and secrets.deidKey (or secrets.existingSecret)" }}
{{- end }}
{{- $s3 := $v.blobs.s3 | default dict }}
{{- if $s3.url }}
{{- if or $v.blobs.existingClaim $v.blobs.storageClassName }}
{{- fail "blobs: blobs.s3.url is set, so leave blobs.existingClaim and blobs.storageClassName empty (no volume is used)" }}
{{- end }}
{{- if and $s3.existingSecret (or $s3.accessKeyId $s3.secretAccessKey) }}
{{- fail "blobs.s3: set either blobs.s3.existingSecret or blobs.s3.accessKeyId and blobs.s3.secretAccessKey, not both" }}
{{- end }}
{{- if and (empty $s3.accessKeyId) (not (empty $s3.secretAccessKey)) }}
{{- fail "blobs.s3: blobs.s3.secretAccessKey is set without blobs.s3.accessKeyId: set both (or neither, for ambient credentials)" }}
{{- end }}
{{- if and (not (empty $s3.accessKeyId)) (empty $s3.secretAccessKey) }}
{{- fail "blobs.s3: blobs.s3.accessKeyId is set without blobs.s3.secretAccessKey: set both (or neither, for ambient credentials)" }}
{{- end }}
{{- if and (hasPrefix "http://" ($s3.endpoint | default "")) (not $s3.allowHttp) }}
{{- fail "blobs.s3: blobs.s3.endpoint is a plain http:// URL: set blobs.s3.allowHttp: true (or use https://)" }}
{{- end }}
{{- else }}
{{- range $key := list "region" "endpoint" "allowHttp" "existingSecret" "accessKeyId" "secretAccessKey" }}
{{- if index $s3 $key }}
{{- fail (printf "blobs.s3: blobs.s3.%s is set but blobs.s3.url is empty: set the bucket's url, or remove the other blobs.s3 values" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $component := list "gateway" "ingest" }}
{{- $s := index $v $component }}
{{- if and $s.autoscaling.enabled (not (dig "requests" "cpu" "" $s.resources)) }}
{{- fail (printf "%s: autoscaling on CPU needs %s.resources.requests.cpu" $component $component) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The environment every service gets. */}}
{{- define "imaging-hub.env" -}}
{{- $v := .Values }}
{{- $secret := include "imaging-hub.secretName" . -}}
- name: HUB_HTTP
  value: "0.0.0.0:8080"
- name: HUB_DATA_DIR
  value: /var/lib/hub
- name: HUB_LOG
  value: {{ $v.logLevel | quote }}
- name: HUB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if $v.postgres.existingSecret }}
      name: {{ $v.postgres.existingSecret }}
      key: {{ $v.postgres.existingSecretKey }}
      {{- else }}
      name: {{ $secret }}
      key: database-url
      {{- end }}
- name: HUB_KAFKA_BROKERS
  value: {{ $v.kafka.brokers | quote }}
- name: HUB_KAFKA_TOPIC_PREFIX
  value: {{ $v.kafka.topicPrefix | quote }}
- name: HUB_KAFKA_PARTITIONS
  value: {{ $v.kafka.partitions | int | quote }}
- name: HUB_KAFKA_REPLICATION
  value: {{ $v.kafka.replication | int | quote }}
{{- if $v.auth.jwksUrl }}
- name: HUB_JWT_JWKS
  value: {{ $v.auth.jwksUrl | quote }}
{{- else }}
- name: HUB_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $v.auth.existingSecret | default $secret }}
      key: jwt-secret
{{- end }}
{{- $keys := $v.secrets.existingSecret | default $secret }}
- name: HUB_PATIENT_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $keys }}
      key: patient-key
- name: HUB_DEID_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $keys }}
      key: deid-key
{{- end }}

{{/* The blob store's environment: HUB_BLOB_URL and the AWS_* settings, or HUB_BLOB_DIR. */}}
{{- define "imaging-hub.blobEnv" -}}
{{- $url := include "imaging-hub.blobUrl" . }}
{{- if $url }}
{{- $s3 := .Values.blobs.s3 -}}
- name: HUB_BLOB_URL
  value: {{ $url | quote }}
{{- with $s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $s3.endpoint }}
- name: AWS_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if $s3.allowHttp }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- $keys := $s3.existingSecret | default (ternary (include "imaging-hub.secretName" .) "" (not (empty $s3.accessKeyId))) }}
{{- if $keys }}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $keys }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- else -}}
- name: HUB_BLOB_DIR
  value: {{ include "imaging-hub.blobDir" . }}
{{- end }}
{{- end }}

{{/*
One service's Deployment. Context: dict with
  root, component, values (the service's values),
  replicas (omitted when values.autoscaling.enabled), strategy (RollingUpdate or Recreate),
  env and ports (extra YAML list items, may be empty),
  blobs (true: the blob store's environment, and the blob volume's mount unless blobs.s3.url is
  set; only for services that touch blobs).
*/}}
{{- define "imaging-hub.deployment" -}}
{{- $root := .root }}
{{- $c := .component }}
{{- $v := .values }}
{{- $blobVolume := and .blobs (not (include "imaging-hub.blobUrl" $root)) }}
{{- $probes := mergeOverwrite (deepCopy $root.Values.probes) (deepCopy ($v.probes | default dict)) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "imaging-hub.componentName" (list $root $c) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "imaging-hub.componentLabels" (list $root $c) | nindent 4 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false $v) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with $v.progressDeadlineSeconds }}
  progressDeadlineSeconds: {{ . }}
  {{- end }}
  strategy:
    type: {{ .strategy }}
    {{- if eq .strategy "RollingUpdate" }}
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    {{- end }}
  selector:
    matchLabels:
      {{- include "imaging-hub.componentSelectorLabels" (list $root $c) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "imaging-hub.componentSelectorLabels" (list $root $c) | nindent 8 }}
      annotations:
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        prometheus.io/scrape: "true"
        prometheus.io/port: "8080"
        prometheus.io/path: /metrics
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "imaging-hub.serviceAccountName" $root }}
      # The hub never calls the Kubernetes API.
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $c }}
          image: {{ include "imaging-hub.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["run", {{ $c | quote }}]
          ports:
            - name: http
              containerPort: 8080
              protocol: TCP
            {{- with .ports }}
            {{- . | nindent 12 }}
            {{- end }}
          env:
            {{- include "imaging-hub.env" $root | nindent 12 }}
            {{- if .blobs }}
            {{- include "imaging-hub.blobEnv" $root | nindent 12 }}
            {{- end }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $probes.readiness | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/hub
            - name: tmp
              mountPath: /tmp
            {{- if $blobVolume }}
            - name: blobs
              mountPath: {{ include "imaging-hub.blobDir" $root }}
            {{- end }}
      volumes:
        - name: data
          emptyDir:
            {{- with $root.Values.dataVolume.sizeLimit }}
            sizeLimit: {{ . }}
            {{- else }} {}
            {{- end }}
        - name: tmp
          emptyDir: {}
        {{- if $blobVolume }}
        - name: blobs
          persistentVolumeClaim:
            claimName: {{ include "imaging-hub.blobsClaimName" $root }}
        {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* One service's Service on http (8080). Context: (list root component). */}}
{{- define "imaging-hub.service" -}}
{{- $root := index . 0 }}
{{- $c := index . 1 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "imaging-hub.componentName" (list $root $c) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "imaging-hub.componentLabels" (list $root $c) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "imaging-hub.componentSelectorLabels" (list $root $c) | nindent 4 }}
  ports:
    - name: http
      port: 8080
      targetPort: http
      protocol: TCP
{{- end }}
