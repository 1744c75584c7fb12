{{/* Pieces shared by the Redis and Sentinel StatefulSets. */}}

{{- define "shopipe.redisImage" -}}
{{- if eq .Values.redis.image.tag "latest" -}}
{{- fail "redis.image.tag must pin a version, not latest" -}}
{{- end -}}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag -}}
{{- end -}}

{{/* Everything the init scripts need to find the Redis pods and the Sentinels. */}}
{{- define "shopipe.redisScriptEnv" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "shopipe.secretName" . }}, key: redis-password}
- name: SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "shopipe.secretName" . }}, key: sentinel-password}
# Accepted beside the passwords above while rotating them (docs/operations.md); usually absent.
- name: REDIS_EXTRA_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "shopipe.secretName" . }}, key: redis-password-extra, optional: true}
- name: SENTINEL_EXTRA_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "shopipe.secretName" . }}, key: sentinel-password-extra, optional: true}
- name: MASTER_NAME
  value: {{ .Values.redis.masterName | quote }}
- name: REDIS_STS
  value: {{ include "shopipe.redisName" . | quote }}
- name: REDIS_HEADLESS
  value: {{ include "shopipe.redisHeadless" . | quote }}
- name: REDIS_REPLICAS
  value: {{ .Values.redis.replicas | quote }}
- name: SENTINEL_STS
  value: {{ include "shopipe.sentinelName" . | quote }}
- name: SENTINEL_HEADLESS
  value: {{ include "shopipe.sentinelHeadless" . | quote }}
- name: SENTINEL_REPLICAS
  value: {{ .Values.redis.sentinel.replicas | quote }}
- name: CONF_DIR
  value: /etc/redis-run
{{- end -}}

{{- define "shopipe.redisAffinity" -}}
podAntiAffinity:
  {{- if eq .root.Values.redis.antiAffinity "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "shopipe.selectorLabels" . | nindent 10 }}
  {{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "shopipe.selectorLabels" . | nindent 12 }}
  {{- end }}
{{- end -}}

{{/* redis-cli against the local server, password from the environment, never on argv. */}}
{{- define "shopipe.redisProbe" -}}
exec:
  command:
    - sh
    - -c
    - {{ printf "REDISCLI_AUTH=\"$%s\" redis-cli --no-auth-warning -p %d ping | grep -Eq '%s'" .passwordVar (int .port) .accept | quote }}
{{- end -}}
