{{/*
One llama.cpp tier: the Deployment (each pod downloads the model into its own volume: an emptyDir
on the node's local disk or a generic ephemeral volume, as model.volume says), its Service, the NetworkPolicy that admits only the router, and for the CPU tier a
PodDisruptionBudget. Call with (dict "root" $ "name" "cpu-llm-server" "component" "llama-cpu"
"image" ... "replicas" <int, or nil: KEDA owns them> "model" ... "llamacpp" ... "where"
"cpu.llamacpp" "resources" ... "extraLimits" ... "gpu" <bool> "scheduling" <YAML of
nodeSelector/tolerations/runtimeClassName, or "">).
*/}}
{{- define "llm-router.llamaServer" -}}
{{- $root := .root -}}
{{- $name := include "llm-router.objectName" (dict "root" $root "name" .name) -}}
{{- $shutdown := (include "llm-router.facts" $root | fromYaml).shutdown -}}
{{- $ctx := dict "root" $root "component" .component -}}
{{- $modelsDir := dir .model.path -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "llm-router.labels" $ctx | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ int .replicas }}
  {{- end }}
  # Each pod has its own model volume, so pods roll one by one; the GPU tier never surges (a
  # surge pod would buy a second GPU node for the length of a rollout).
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if .gpu }}
      maxSurge: 0
      maxUnavailable: 1
      {{- else }}
      maxSurge: 1
      maxUnavailable: 0
      {{- end }}
  selector:
    matchLabels:
      {{- include "llm-router.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "llm-router.labels" $ctx | nindent 8 }}
        {{- if .model.storeUri }}
        {{- with $root.Values.modelStore.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- end }}
    spec:
      {{- if .model.storeUri }}
      # Reads the cloud's model store through its workload identity (docs/deploy.md).
      serviceAccountName: {{ include "llm-router.objectName" (dict "root" $root "name" "llm-model-reader") }}
      {{- end }}
      automountServiceAccountToken: false
      # preStop waits for running requests; then llama-server gets SIGTERM and stops at once.
      terminationGracePeriodSeconds: {{ int $shutdown.llamaGraceSeconds }}
      securityContext:
        {{- include "llm-router.podSecurityContext" $root | nindent 8 }}
      {{- include "llm-router.imagePullSecrets" $root | nindent 6 }}
      {{- if not .gpu }}
      topologySpreadConstraints:
        {{- include "llm-router.spread" $ctx | nindent 8 }}
      {{- end }}
      {{- with .scheduling }}
      {{- . | nindent 6 }}
      {{- end }}
      initContainers:
        # Downloads the model into the pod's own volume (empty at every pod start), checks its
        # sha256, and only renames a complete, checked file into place.
        # The pod's fetcher (`llmctl model fetch`, in the router image): parallel ranged GETs
        # from this cloud's model store when one is configured, else from the model's uri (the
        # Hub, with HF_TOKEN), its sha256 checked (pinned, or the .sha256 beside a store's copy);
        # logs and writes the fetch stage (issue 30).
        - name: fetch-model
          image: {{ $root.Values.images.modelFetcher | default $root.Values.images.router | toJson }}
          command: ["llmctl", "model", "fetch"]
          terminationMessagePolicy: FallbackToLogsOnError
          env:
            - name: MODEL_URI
              value: {{ .model.storeUri | default .model.uri | toJson }}
            - name: MODEL_PATH
              value: {{ .model.path | toJson }}
            {{- with .model.sha256 }}
            - name: MODEL_SHA256
              value: {{ . | toJson }}
            {{- end }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.modelDownload.tokenSecret | toJson }}
                  key: {{ $root.Values.modelDownload.tokenKey | toJson }}
                  optional: true
            - name: MODEL_FETCH_METRICS_FILE
              value: {{ printf "%s/.llmctl-fetch.prom" $modelsDir | toJson }}
            {{- if .model.storeUri }}
            {{- with $root.Values.modelStore.region }}
            - name: AWS_REGION
              value: {{ . | toJson }}
            {{- end }}
            {{- end }}
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
          {{- if .gpu }}
          # The CUDA JIT cache (the pinned CUDA image has T4 code only as PTX): writable, so a
          # restarted container reuses what the last one compiled.
          env:
            - name: CUDA_CACHE_PATH
              value: /var/cache/cuda
            - name: CUDA_CACHE_MAXSIZE
              value: "1073741824"
          {{- end }}
          ports:
            - name: http
              containerPort: 8080
          # /health answers 503 while the model loads, then 200. Polled every second (a 10 s
          # period left a loaded server waiting up to 10 s for Ready); the budget stays 900 s.
          startupProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 1
            failureThreshold: 900
          readinessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 5
            failureThreshold: 3
          livenessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 15
            timeoutSeconds: 5
            failureThreshold: 4
          lifecycle:
            preStop:
              exec:
                command:
                  - sh
                  - -c
                  - |
                    sleep 5
                    end=$(( $(date +%s) + {{ sub (sub $shutdown.llamaGraceSeconds $shutdown.llamaDrainMarginSeconds) 5 }} ))
                    while [ "$(date +%s)" -lt "$end" ]; do
                      curl -sf http://127.0.0.1:8080/metrics | awk '/^llamacpp:requests_(processing|deferred) / { n += $2 } END { exit !(n > 0) }' || exit 0
                      sleep 1
                    done
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
            {{- if .gpu }}
            - name: cuda-cache
              mountPath: /var/cache/cuda
            {{- end }}
        # The pod's start-up stages for Prometheus (issue 30), started beside llama-server (not
        # before it: nothing waits for it); it times the load from llama-server's /health, logs
        # each stage and serves them all on its port (docs/deploy.md, "Stages").
        - name: stages
          image: {{ $root.Values.images.modelFetcher | default $root.Values.images.router | toJson }}
          command: ["python3", "-m", "llmctl.modelstore.watch"]
          env:
            - name: MODEL_FETCH_METRICS_FILE
              value: {{ printf "%s/.llmctl-fetch.prom" $modelsDir | toJson }}
            - name: LLAMA_SERVER_URL
              value: "http://127.0.0.1:8080"
            - name: STAGES_PORT
              value: "9464"
          ports:
            - name: stages
              containerPort: 9464
          resources:
            requests: {cpu: 10m, memory: 32Mi}
            limits: {memory: 64Mi}
          securityContext:
            {{- include "llm-router.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: models
              mountPath: {{ $modelsDir | toJson }}
              readOnly: true
      volumes:
        # Each pod's own model volume, gone with the pod, so replicas never share a disk and no
        # pod is pinned to the zone of a disk an earlier pod left behind. local: an emptyDir on
        # the node's own disk (the kubelet's ephemeral storage: the NVMe instance store, local
        # SSD or ephemeral OS disk of the pool `llmctl gpu enable` makes); ephemeral: a generic
        # ephemeral volume, a network disk claimed with the pod and deleted with it.
        {{- if eq .model.volume "local" }}
        - name: models
          emptyDir:
            sizeLimit: {{ .model.storageSize | toJson }}
        {{- else }}
        - name: models
          ephemeral:
            volumeClaimTemplate:
              metadata:
                labels:
                  {{- include "llm-router.labels" $ctx | nindent 18 }}
              spec:
                accessModes: ["ReadWriteOnce"]
                {{- with .model.storageClassName }}
                storageClassName: {{ . | toJson }}
                {{- end }}
                resources:
                  requests:
                    storage: {{ .model.storageSize | toJson }}
        {{- end }}
        - name: tmp
          emptyDir:
            sizeLimit: 1Gi
        {{- if .gpu }}
        - name: cuda-cache
          emptyDir:
            sizeLimit: 2Gi
        {{- end }}
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
        - protocol: TCP
          port: 9464
{{- if not .gpu }}
---
# Node drains and upgrades evict one pod at a time; the other keeps serving.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "llm-router.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "llm-router.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end -}}
