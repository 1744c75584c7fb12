{{/* Egress rules of one component when networkPolicy.egress.enabled: DNS, Redis and Sentinel,
     then what the component itself opens. Redis/Sentinel pods: DNS and each other. Receivers
     and workers: S3. Workers: the forwarding destinations. The operator: the API server, and
     the ops port of receivers and workers (/status). */}}
{{- define "shopipe.egress" -}}
{{- $root := .root -}}
{{- $eg := $root.Values.networkPolicy.egress -}}
{{- $release := $root.Release.Name -}}
{{- if $eg.dns.enabled }}
- to:
    {{- toYaml $eg.dns.to | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
{{- if $root.Values.redis.enabled }}
- to:
    - podSelector:
        matchExpressions:
          - {key: app.kubernetes.io/instance, operator: In, values: [{{ $release | quote }}]}
          - {key: app.kubernetes.io/component, operator: In, values: [redis, sentinel]}
  ports:
    - {port: 6379, protocol: TCP}
    - {port: 26379, protocol: TCP}
{{- else }}
{{- include "shopipe.egressTo" (dict "cidrs" $eg.redis.cidrs "ports" $eg.redis.ports) }}
{{- end }}
{{- /* The operator lists incoming/ for its backlog: without S3 it would never scale. */}}
{{- if has .component (list "receiver" "worker" "operator") }}
{{- include "shopipe.egressTo" (dict "cidrs" $eg.s3.cidrs "ports" (list $eg.s3.port)) }}
{{- end }}
{{- if eq .component "worker" }}
{{- range $eg.destinations }}
{{- include "shopipe.egressTo" . }}
{{- end }}
{{- end }}
{{- if eq .component "operator" }}
{{- include "shopipe.egressTo" (dict "cidrs" $eg.apiServer.cidrs "ports" (list $eg.apiServer.port)) }}
- to:
    - podSelector:
        matchExpressions:
          - {key: app.kubernetes.io/instance, operator: In, values: [{{ $release | quote }}]}
          - {key: app.kubernetes.io/component, operator: In, values: [receiver, worker]}
  ports:
    - {port: 9090, protocol: TCP}
{{- end }}
{{- end -}}

{{/* One egress rule to address ranges (.cidrs) on TCP ports (.ports). */}}
{{- define "shopipe.egressTo" }}
- to:
    {{- range .cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    {{- range .ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end -}}
