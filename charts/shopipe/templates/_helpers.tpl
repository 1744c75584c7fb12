{{/* Names, labels and the pieces every shopipe pod shares. */}}

{{- define "shopipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shopipe.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>, kept within 63 characters. */}}
{{- define "shopipe.component" -}}
{{- printf "%s-%s" (include "shopipe.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shopipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shopipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shopipe.labels" -}}
{{ include "shopipe.selectorLabels" . }}
app.kubernetes.io/part-of: shopipe
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of objects that belong to no single component. */}}
{{- define "shopipe.commonLabels" -}}
app.kubernetes.io/name: {{ include "shopipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: shopipe
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "shopipe.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must pin a version, not latest" -}}
{{- end -}}
{{- printf "%s/shopipe-%s:%s" .root.Values.image.registry .component $tag -}}
{{- end -}}

{{- define "shopipe.secretName" -}}
{{- default (include "shopipe.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "shopipe.serviceAccountName" -}}
{{- include "shopipe.fullname" . -}}
{{- end -}}

{{/* StatefulSet names stay within 52 characters: the controller-revision-hash label of their
     pods is the name plus "-" and a hash of up to 10 characters, and a label value has 63 at
     most. The release part is cut, never the suffix, so Redis and Sentinel stay apart. */}}
{{- define "shopipe.statefulSetName" -}}
{{- $room := sub 52 (add1 (len .component)) | int -}}
{{- printf "%s-%s" (include "shopipe.fullname" .root | trunc $room | trimSuffix "-") .component -}}
{{- end -}}
{{- define "shopipe.redisName" -}}{{ include "shopipe.statefulSetName" (dict "root" . "component" "redis") }}{{- end -}}
{{- define "shopipe.sentinelName" -}}{{ include "shopipe.statefulSetName" (dict "root" . "component" "sentinel") }}{{- end -}}
{{- define "shopipe.redisHeadless" -}}{{ include "shopipe.redisName" . | trunc 54 | trimSuffix "-" }}-headless{{- end -}}
{{- define "shopipe.sentinelHeadless" -}}{{ include "shopipe.sentinelName" . | trunc 54 | trimSuffix "-" }}-headless{{- end -}}

{{/* Sentinel addresses the shopipe processes ask for the master (SHOPIPE_SENTINELS). Pod names
     under the headless Service, without namespace, so the base also works under a kustomize
     namespace. */}}
{{- define "shopipe.sentinels" -}}
{{- if .Values.redis.enabled -}}
{{- $out := list -}}
{{- $sts := include "shopipe.sentinelName" . -}}
{{- $svc := include "shopipe.sentinelHeadless" . -}}
{{- range $i := until (int .Values.redis.sentinel.replicas) -}}
{{- $out = append $out (printf "%s-%d.%s:26379" $sts $i $svc) -}}
{{- end -}}
{{- join "," $out -}}
{{- else -}}
{{- join "," .Values.redis.external.sentinels -}}
{{- end -}}
{{- end -}}

{{/* Restricted securityContext of every container (Pod Security Standard "restricted"). */}}
{{- define "shopipe.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "shopipe.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Prefer one pod of a component per node unless the user gave an affinity. */}}
{{- define "shopipe.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "shopipe.selectorLabels" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* Environment of every shopipe container: its pod name, its ports, the credentials. Settings
     come from the ConfigMaps; only secretKeyRef carries anything secret. */}}
{{- define "shopipe.env" -}}
- name: SHOPIPE_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SHOPIPE_HTTP_PORT
  value: {{ .port | quote }}
{{- $secret := include "shopipe.secretName" .root }}
{{- $optional := not .root.Values.redis.enabled }}
{{- if eq .component "receiver" }}
- name: SHOPIPE_OPS_PORT
  value: "9090"
- name: SHOPIPE_SHOPIFY_SECRETS
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: shopify-secrets}
{{- end }}
{{- if and (eq .component "worker") (include "shopipe.forward" .root) }}
- name: SHOPIPE_FORWARD_ROUTES_FILE
  value: /etc/shopipe/forward/routes.json
- name: SHOPIPE_FORWARD_SHOPIFY_SECRET
  valueFrom:
    # Not optional: without it no X-Shopify-Hmac-Sha256 is sent, the app refuses every
    # delivery and each webhook is dead-lettered; a pod that does not start says so at once.
    secretKeyRef: {name: {{ $secret }}, key: forward-shopify-secret}
{{- end }}
- name: SHOPIPE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: s3-access-key}
- name: SHOPIPE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: s3-secret-key}
- name: SHOPIPE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: redis-password, optional: {{ $optional }}}
- name: SHOPIPE_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: sentinel-password, optional: {{ $optional }}}
{{- end -}}

{{/* envFrom of a shopipe container: shared settings, then its own component's. */}}
{{- define "shopipe.envFrom" -}}
- configMapRef:
    name: {{ include "shopipe.fullname" .root }}
- configMapRef:
    name: {{ include "shopipe.component" . }}
{{- end -}}

{{/* Rolls pods when their settings or credentials change. */}}
{{- define "shopipe.checksums" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
checksum/secret: {{ include "shopipe.secretChecksum" .root }}
{{- end -}}

{{/* A hash of the credentials, in every pod template that reads them (apps, Redis, Sentinel):
     a changed password rolls all of its users, not only some (WRONGPASS otherwise). With
     existingSecret, the live Secret is read at install and upgrade (empty under helm template),
     so `helm upgrade` after changing it rolls the pods too. */}}
{{- define "shopipe.secretChecksum" -}}
{{- if .Values.existingSecret -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace .Values.existingSecret | default dict -}}
{{- get $live "data" | toJson | sha256sum -}}
{{- else -}}
{{- include (print .Template.BasePath "/secret.yaml") . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* Writable scratch space; the root filesystem is read-only. And the CA of an external Redis
     over TLS, where one is set. */}}
{{- define "shopipe.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with include "shopipe.redisCA" .Values }}
- name: redis-ca
  configMap:
    name: {{ . }}
    items:
      - {key: {{ $.Values.redis.external.tls.caKey }}, path: {{ $.Values.redis.external.tls.caKey }}}
{{- end }}
{{- end -}}

{{- define "shopipe.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- if include "shopipe.redisCA" .Values }}
- name: redis-ca
  mountPath: /etc/shopipe/redis-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* The ConfigMap with the CA of an external Redis over TLS (redis.external.tls), if any. */}}
{{- define "shopipe.redisCA" -}}
{{- $t := .redis.external.tls -}}
{{- if and $t.enabled $t.caConfigMap (not .redis.enabled) }}{{ $t.caConfigMap }}{{ end -}}
{{- end -}}

{{/* "true" when the cluster serves the Prometheus Operator's CRD of .kind. Without it a
     ServiceMonitor or PrometheusRule aborts the whole install ("no matches for kind"): the
     object is left out instead and NOTES.txt says so. helm template has no cluster: pass
     --api-versions monitoring.coreos.com/v1/<Kind>. */}}
{{- define "shopipe.hasMonitoringCRD" -}}
{{- if .root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the worker runs the forward handler (docs/forwarding.md). */}}
{{- define "shopipe.forward" -}}
{{- if or .Values.worker.forward.enabled .Values.worker.forward.routes -}}true{{- end -}}
{{- end -}}
