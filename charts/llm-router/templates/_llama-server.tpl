{{/*
One llama.cpp tier: the PVC that keeps its model, the Deployment (an init container fetches the
model once), its Service and the NetworkPolicy that admits only the router. Call with
(dict "root" $ "name" "cpu-llm-server" "component" "llama-cpu" "image" ... "replicas" ...
"model" ... "llamacpp" ... "where" "cpu.llamacpp" "resources" ... "extraLimits" ...
"scheduling" <YAML of nodeSelector/tolerations/runtimeClassName, or "">).
*/}}
{{- define "llm-router.llamaServer" -}}
{{- $root := .root -}}
{{- $name := include "llm-router.objectName" (dict "root" $root "name" .name) -}}
{{- $claim := include "llm-router.objectName" (dict "root" $root "name" (printf "%s-models" .name)) -}}
{{- $ctx := dict "root" $root "component" .component -}}
{{- $modelsDir := dir .model.path -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ $claim }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "llm-router.labels" $ctx | nindent 4 }}
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: {{ .model.storageSize | toJson }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "llm-router.labels" $ctx | nindent 4 }}
spec:
  replicas: {{ int .replicas }}
  # One ReadWriteOnce volume holds the model: the old pod must let go before the new one starts.
  strategy:
    type: Recreate
  selector:
    matchLabels:
      {{- include "llm-router.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "llm-router.labels" $ctx | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      securityContext:
        {{- include "llm-router.podSecurityContext" $root | nindent 8 }}
      {{- with .scheduling }}
      {{- . | nindent 6 }}
      {{- end }}
      initContainers:
        # Downloads the model once; a restart finds it on the volume and starts at once. A partial
        # download resumes (-C -) and only a complete file is renamed into place.
        - name: fetch-model
          image: {{ $root.Values.images.modelFetcher | toJson }}
          command:
            - sh
            - -c
            - |
              set -eu
              if [ -s "$MODEL_PATH" ]; then echo "model present: $MODEL_PATH"; exit 0; fi
              echo "downloading $MODEL_URI"
              curl -fL --retry 5 --retry-delay 10 -C - -o "$MODEL_PATH.part" "$MODEL_URI"
              mv "$MODEL_PATH.part" "$MODEL_PATH"
          env:
            - name: MODEL_URI
              value: {{ .model.uri | toJson }}
            - name: MODEL_PATH
              value: {{ .model.path | toJson }}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {memory: 256Mi}
          securityContext:
            {{- include "llm-router.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: models
              mountPath: {{ $modelsDir | toJson }}
            - name: tmp
              mountPath: /tmp
      containers:
        - name: llama-server
          image: {{ .image | toJson }}
          args:
            {{- include "llm-router.llamaArgs" (dict "model" .model "llamacpp" .llamacpp "where" .where) | nindent 12 }}
          ports:
            - name: http
              containerPort: 8080
          # /health answers 503 while the model loads, then 200.
          startupProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 10
            failureThreshold: 90
          readinessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 5
            failureThreshold: 3
          livenessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 15
            timeoutSeconds: 5
            failureThreshold: 4
          resources:
            {{- include "llm-router.resources" (dict "resources" .resources "extraLimits" .extraLimits) | nindent 12 }}
          securityContext:
            {{- include "llm-router.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: models
              mountPath: {{ $modelsDir | toJson }}
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: models
          persistentVolumeClaim:
            claimName: {{ $claim }}
        - name: tmp
          emptyDir:
            sizeLimit: 1Gi
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "llm-router.labels" $ctx | nindent 4 }}
spec:
  selector:
    {{- include "llm-router.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: http
      port: 8080
      targetPort: http
---
# llama.cpp has no authentication: only the router may reach it, and Prometheus its /metrics.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "llm-router.objectName" (dict "root" $root "name" (printf "%s-ingress" .name)) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "llm-router.labels" $ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "llm-router.selectorLabels" $ctx | nindent 6 }}
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              {{- include "llm-router.selectorLabels" (dict "root" $root "component" "router") | nindent 14 }}
      ports:
        - protocol: TCP
          port: 8080
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ $root.Values.observability.prometheusNamespace | toJson }}
      ports:
        - protocol: TCP
          port: 8080
{{- end -}}
