{{/* The release's base name, at most 63 characters (a DNS label). */}}
{{- define "nexus-policy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nexus-policy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nexus-policy.labels" -}}
{{ include "nexus-policy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "nexus-policy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nexus-policy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "nexus-policy.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "nexus-policy.url" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "nexus-policy.fullname" .) .Release.Namespace .Values.service.port) .Values.controlPlane.url -}}
{{- end -}}

{{/*
The environment of every nexus-policy process (server and migration Job): the databases, Redis
and the key provider. Passwords come from Secrets and never appear in the manifest.
*/}}
{{- define "nexus-policy.env" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.passwordSecret.name }}
      key: {{ .Values.database.passwordSecret.key }}
- name: PGSSLMODE
  value: {{ .Values.database.tls.mode | quote }}
{{- if .Values.database.tls.caSecret }}
- name: PGSSLROOTCERT
  value: /etc/nexus/tls/postgresql/ca.crt
{{- end }}
- name: NEXUS_DATABASE_URL
  value: {{ .Values.database.url | quote }}
- name: NEXUS_AUDIT_DATABASE_URL
  value: {{ default .Values.database.url .Values.audit.databaseUrl | quote }}
- name: NEXUS_COLOCATE_AUDIT
  value: {{ .Values.audit.colocated | quote }}
{{- if .Values.redis.url }}
- name: NEXUS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.passwordSecret.name }}
      key: {{ .Values.redis.passwordSecret.key }}
{{- $u := urlParse .Values.redis.url }}
{{- $query := "" }}
{{- if .Values.redis.tls.caSecret }}
{{- $query = "ssl_cert_reqs=required&ssl_ca_certs=/etc/nexus/tls/redis/ca.crt" }}
{{- end }}
- name: NEXUS_REDIS_URL
  value: {{ printf "%s://:$(NEXUS_REDIS_PASSWORD)@%s%s%s" $u.scheme $u.host $u.path (ternary (printf "?%s" $query) "" (ne $query "")) | quote }}
{{- end }}
- name: NEXUS_KEYS_DIR
  value: /etc/nexus/keys
- name: NEXUS_KEY_PROVIDER
  value: {{ .Values.keys.provider | quote }}
- name: NEXUS_SIGNING_KEY_ID
  value: {{ .Values.keys.signingKeyId | quote }}
- name: NEXUS_SIGNING_ALGORITHM
  value: {{ .Values.keys.signingAlgorithm | quote }}
{{- if eq .Values.keys.provider "pkcs11" }}
- name: NEXUS_PKCS11_MODULE
  value: {{ .Values.keys.pkcs11.module | quote }}
- name: NEXUS_PKCS11_TOKEN_LABEL
  value: {{ .Values.keys.pkcs11.tokenLabel | quote }}
- name: NEXUS_PKCS11_PIN_FILE
  value: /etc/nexus/pkcs11/pin
{{- end }}
{{- end -}}

{{/* The volumes behind nexus-policy.env's files; every Secret is mounted read-only, 0400. */}}
{{- define "nexus-policy.secretVolumes" -}}
{{- if .Values.database.tls.caSecret }}
- name: postgresql-ca
  secret:
    secretName: {{ .Values.database.tls.caSecret }}
    defaultMode: 0444
{{- end }}
{{- if and .Values.redis.url .Values.redis.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.tls.caSecret }}
    defaultMode: 0444
{{- end }}
{{- if eq .Values.keys.provider "file" }}
- name: keys
  secret:
    secretName: {{ .Values.keys.existingSecret }}
    defaultMode: 0400
{{- else }}
- name: keys
  emptyDir:
    sizeLimit: 1Mi
- name: pkcs11-pin
  secret:
    secretName: {{ .Values.keys.pkcs11.pinSecret.name }}
    defaultMode: 0400
    items:
      - key: {{ .Values.keys.pkcs11.pinSecret.key }}
        path: pin
{{- end }}
{{- end -}}

{{- define "nexus-policy.secretMounts" -}}
{{- if .Values.database.tls.caSecret }}
- name: postgresql-ca
  mountPath: /etc/nexus/tls/postgresql
  readOnly: true
{{- end }}
{{- if and .Values.redis.url .Values.redis.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/nexus/tls/redis
  readOnly: true
{{- end }}
- name: keys
  mountPath: /etc/nexus/keys
  readOnly: true
{{- if eq .Values.keys.provider "pkcs11" }}
- name: pkcs11-pin
  mountPath: /etc/nexus/pkcs11
  readOnly: true
{{- end }}
{{- end -}}

{{/* Egress every nexus-policy process needs: DNS and PostgreSQL. */}}
{{- define "nexus-policy.egressDnsAndDatabase" -}}
- to:
    - {{- toYaml .Values.networkPolicy.dns | nindent 6 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- to:
    {{- toYaml .Values.database.networkPeers | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.database.port }}}
{{- end -}}
