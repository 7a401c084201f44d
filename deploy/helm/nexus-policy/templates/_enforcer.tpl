{{/*
The enforcer pattern: Envoy + OPA (our build, with the ext_authz plugin) as sidecars of a
gateway pod. A gateway chart that depends on this chart includes, for each enforcer:

  {{- $e := dict "root" $ "id" "gw-eu-1" "region" "eu-west-1"
        "tokenSecret" "nexus-enforcer-gw-eu-1" "envoyConfigMap" "my-envoy"
        "controlPlaneUrl" "http://nexus-policy.nexus.svc:8700" }}
  ConfigMap:      {{ include "nexus-policy.enforcer.configMap" $e }}
  pod labels:     {{ include "nexus-policy.enforcer.labels" $e }}
  containers:     {{ include "nexus-policy.enforcer.containers" $e }}
  volumes:        {{ include "nexus-policy.enforcer.volumes" $e }}
  NetworkPolicy:  {{ include "nexus-policy.enforcer.networkPolicy" $e }}

Each enforcer is one identity: its id, its region and its own token (the Secret named by
tokenSecret, key "token", made with `nexus-policy tokens create --role enforcer --enforcer ID
--region R`). A token speaks for that one enforcer only, so one enforcer is one pod: render a
Deployment with replicas 1 per enforcer id rather than sharing a token between replicas.
Optional keys (defaults from .root.Values.enforcer, then the constants below): opaImage,
envoyImage, keyId, keyAlgorithm, verificationKeyConfigMap, listenPort, grpcPort,
shadowSamplePercent (Checks evaluated against the region's shadow candidate, 0 to 100; 0
renders no shadow block), gatewayPeers (who may reach Envoy), upstreamPeers/upstreamPort (where Envoy forwards to),
controlPlanePeers (where the control plane runs; default: pods of this release), auditUrl
(the decision-log intake; default controlPlaneUrl, where the co-located audit service
answers), waitFor (default fsync: no answer leaves OPA before its decision is fsynced; write: once in the page cache, which outlives a killed OPA; none),
metricTenants (default .root.Values.metricTenants: tenants counted on their own),
auditPeers/auditPort (egress to an audit service that is not the control plane's pods),
providerPeers/providerPort (egress to the LLM providers' endpoints, default port 443, when
the Envoy config routes chats to provider clusters: `dataplane render` with
NEXUS_DATAPLANE_PROVIDERS_BUNDLE).

Decisions go through the durable decision log (`nexus_durable_log`) into the
enforcer-decisions volume, an emptyDir: it survives OPA being killed and restarted in its
pod, not the pod's deletion; a gateway that must keep unshipped decisions across
rescheduling mounts a PersistentVolumeClaim there instead (`decisionVolume`, a volume
source such as {persistentVolumeClaim: {claimName: ...}}).
*/}}

{{- define "nexus-policy.enforcer.value" -}}
{{- $defaults := dict "opaImage" "ghcr.io/nexusai/nexus-opa:0.1.0" "envoyImage" "envoyproxy/envoy:v1.34.1" "keyId" "nexus-bundle-signing" "keyAlgorithm" "RS256" "verificationKeyConfigMap" "nexus-policy-verification-key" "listenPort" 8080 "grpcPort" 9191 "longPollSeconds" 60 "waitFor" "fsync" "shadowSamplePercent" 0 -}}
{{- $fromValues := dict -}}
{{- if and .args.root .args.root.Values.enforcer -}}
{{- $fromValues = .args.root.Values.enforcer -}}
{{- end -}}
{{- if hasKey .args .key -}}
{{- index .args .key -}}
{{- else if hasKey $fromValues .key -}}
{{- index $fromValues .key -}}
{{- else -}}
{{- index $defaults .key -}}
{{- end -}}
{{- end -}}

{{- define "nexus-policy.enforcer.name" -}}
{{- printf "nexus-enforcer-%s" (required "enforcer: id is required" .id) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nexus-policy.enforcer.labels" -}}
nexus-policy.io/enforcer: "true"
nexus-policy.io/enforcer-id: {{ .id | quote }}
nexus-policy.io/region: {{ required "enforcer: region is required" .region | quote }}
{{- end -}}

{{/* OPA's configuration; the token is read from a file, the verification key set from one. */}}
{{- define "nexus-policy.enforcer.opaConfig" -}}
{{- $url := trimSuffix "/" (required "enforcer: controlPlaneUrl is required" .controlPlaneUrl) -}}
{{- $auditUrl := trimSuffix "/" (default $url .auditUrl) -}}
{{- $poll := include "nexus-policy.enforcer.value" (dict "args" . "key" "longPollSeconds") -}}
{{- $tenants := .metricTenants -}}
{{- if and (not $tenants) .root .root.Values.metricTenants -}}
{{- $tenants = .root.Values.metricTenants -}}
{{- end -}}
services:
  control-plane:
    url: {{ printf "%s/v1/opa" $url | quote }}
    credentials:
      bearer:
        token_path: /var/run/nexus/enforcer/token
    headers:
      x-nexus-enforcer: {{ .id | quote }}
    response_header_timeout_seconds: 10
  audit:
    url: {{ printf "%s/v1/opa" $auditUrl | quote }}
    credentials:
      bearer:
        token_path: /var/run/nexus/enforcer/token
    headers:
      x-nexus-enforcer: {{ .id | quote }}
labels:
  region: {{ .region | quote }}
  enforcer: {{ .id | quote }}
keys:
  {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "keyId") }}:
    algorithm: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "keyAlgorithm") }}
bundles:
  {{- range $bundle := list "nexus" "nexus-state" }}
  {{ $bundle }}:
    service: control-plane
    resource: {{ printf "bundles/%s/%s" $.region $bundle | quote }}
    persist: true
    signing: {}
    polling:
      min_delay_seconds: 1
      max_delay_seconds: 5
      long_polling_timeout_seconds: {{ $poll }}
  {{- end }}
persistence_directory: /var/lib/opa
status:
  service: control-plane
  prometheus: true
decision_logs:
  plugin: nexus_durable_log
  nd_builtin_cache: true
plugins:
  envoy_ext_authz_grpc:
    addr: {{ printf "127.0.0.1:%v" (include "nexus-policy.enforcer.value" (dict "args" . "key" "grpcPort")) | quote }}
    path: nexus/envoy/authz/decision
    labels-path: nexus/capability/labels
    metric-tenants: {{ toJson (default list $tenants) }}
    {{- $shadow := include "nexus-policy.enforcer.value" (dict "args" . "key" "shadowSamplePercent") }}
    {{- if ne $shadow "0" }}
    shadow:
      service: control-plane
      resource: {{ printf "shadow/%s/nexus" .region | quote }}
      polling:
        min_delay_seconds: 1
        max_delay_seconds: 5
      signing: {}
      sample_percent: {{ $shadow }}
      queue_size: 256
      shared_roots: [nexus_state]
    {{- end }}
  nexus_durable_log:
    dir: /var/lib/nexus/decisions
    service: audit
    wait_for: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "waitFor") | quote }}
{{- end -}}

{{- define "nexus-policy.enforcer.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "nexus-policy.enforcer.name" . }}-opa
  labels:
    {{- include "nexus-policy.enforcer.labels" . | nindent 4 }}
data:
  opa-config.yaml: |
    {{- include "nexus-policy.enforcer.opaConfig" . | nindent 4 }}
{{- end -}}

{{- define "nexus-policy.enforcer.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "nexus-policy.enforcer.containers" -}}
{{- $keyId := include "nexus-policy.enforcer.value" (dict "args" . "key" "keyId") -}}
{{- $res := dict -}}
{{- if and .root .root.Values.enforcer .root.Values.enforcer.resources -}}
{{- $res = .root.Values.enforcer.resources -}}
{{- end -}}
- name: opa
  image: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "opaImage") | quote }}
  args:
    - run
    - --server
    - --addr=127.0.0.1:8181
    - --diagnostic-addr=0.0.0.0:8282
    - --config-file=/etc/nexus/opa/opa-config.yaml
    - {{ printf "--set-file=keys.%s.key=/etc/nexus/verification/key.pem" $keyId | quote }}
  env:
    - name: GOGC
      value: "400"
  ports:
    - {name: opa-diag, containerPort: 8282, protocol: TCP}
  # Ready only once the signed bundles are activated: until then every request is denied.
  readinessProbe:
    httpGet:
      path: "/health?bundles=true"
      port: opa-diag
    periodSeconds: 5
  livenessProbe:
    httpGet: {path: /health, port: opa-diag}
    periodSeconds: 10
    failureThreshold: 6
  resources:
    {{- toYaml (default (dict "requests" (dict "cpu" "200m" "memory" "256Mi") "limits" (dict "cpu" "1" "memory" "512Mi")) $res.opa) | nindent 4 }}
  securityContext:
    {{- include "nexus-policy.enforcer.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: enforcer-opa-config, mountPath: /etc/nexus/opa, readOnly: true}
    - {name: enforcer-token, mountPath: /var/run/nexus/enforcer, readOnly: true}
    - {name: enforcer-verification-key, mountPath: /etc/nexus/verification, readOnly: true}
    - {name: enforcer-bundles, mountPath: /var/lib/opa}
    - {name: enforcer-decisions, mountPath: /var/lib/nexus/decisions}
    - {name: enforcer-tmp, mountPath: /tmp}
- name: envoy
  image: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "envoyImage") | quote }}
  args: [-c, /etc/envoy/envoy.yaml, --log-format-escaped]
  ports:
    - name: gateway
      containerPort: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "listenPort") }}
      protocol: TCP
  readinessProbe:
    tcpSocket: {port: gateway}
    periodSeconds: 5
  livenessProbe:
    tcpSocket: {port: gateway}
    periodSeconds: 10
    failureThreshold: 6
  resources:
    {{- toYaml (default (dict "requests" (dict "cpu" "200m" "memory" "128Mi") "limits" (dict "cpu" "1" "memory" "256Mi")) $res.envoy) | nindent 4 }}
  securityContext:
    {{- include "nexus-policy.enforcer.securityContext" . | nindent 4 }}
  volumeMounts:
    - {name: enforcer-envoy-config, mountPath: /etc/envoy, readOnly: true}
    - {name: enforcer-tmp, mountPath: /tmp}
{{- end -}}

{{- define "nexus-policy.enforcer.volumes" -}}
- name: enforcer-opa-config
  configMap:
    name: {{ include "nexus-policy.enforcer.name" . }}-opa
- name: enforcer-envoy-config
  configMap:
    name: {{ required "enforcer: envoyConfigMap is required" .envoyConfigMap }}
- name: enforcer-token
  secret:
    secretName: {{ required "enforcer: tokenSecret is required" .tokenSecret }}
    defaultMode: 0400
    items:
      - {key: token, path: token}
- name: enforcer-verification-key
  configMap:
    name: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "verificationKeyConfigMap") }}
    items:
      - {key: key.pem, path: key.pem}
- name: enforcer-bundles
  emptyDir:
    sizeLimit: 256Mi
- name: enforcer-decisions
  {{- if .decisionVolume }}
  {{- toYaml .decisionVolume | nindent 2 }}
  {{- else }}
  emptyDir:
    sizeLimit: 1Gi
  {{- end }}
- name: enforcer-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/*
The enforcer's NetworkPolicy: the gateway's clients to Envoy in; the control plane's bundle,
status and decision-log endpoints, DNS and Envoy's upstream (and, with providerPeers, the
providers' endpoints) out. OPA's API stays on loopback.
*/}}
{{- define "nexus-policy.enforcer.networkPolicy" -}}
{{- $controlPlanePeers := .controlPlanePeers -}}
{{- if not $controlPlanePeers -}}
{{- $controlPlanePeers = list (dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .root.Release.Namespace)) "podSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" "nexus-policy" "app.kubernetes.io/component" "control-plane"))) -}}
{{- end -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "nexus-policy.enforcer.name" . }}
  labels:
    {{- include "nexus-policy.enforcer.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      nexus-policy.io/enforcer-id: {{ .id | quote }}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        {{- toYaml (required "enforcer: gatewayPeers is required (who may call the gateway)" .gatewayPeers) | nindent 8 }}
      ports:
        - protocol: TCP
          port: {{ include "nexus-policy.enforcer.value" (dict "args" . "key" "listenPort") }}
  egress:
    - to:
        {{- toYaml $controlPlanePeers | nindent 8 }}
      ports:
        - {protocol: TCP, port: {{ default 8700 .controlPlanePort }}}
    {{- with .auditPeers }}
    - to:
        {{- toYaml . | nindent 8 }}
      ports:
        - {protocol: TCP, port: {{ required "enforcer: auditPort is required with auditPeers" $.auditPort }}}
    {{- end }}
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
          podSelector:
            matchLabels:
              k8s-app: kube-dns
      ports:
        - {protocol: UDP, port: 53}
        - {protocol: TCP, port: 53}
    - to:
        {{- toYaml (required "enforcer: upstreamPeers is required (where Envoy forwards)" .upstreamPeers) | nindent 8 }}
      ports:
        - protocol: TCP
          port: {{ required "enforcer: upstreamPort is required" .upstreamPort }}
    {{- with .providerPeers }}
    - to:
        {{- toYaml . | nindent 8 }}
      ports:
        - {protocol: TCP, port: {{ default 443 $.providerPort }}}
    {{- end }}
{{- end -}}
