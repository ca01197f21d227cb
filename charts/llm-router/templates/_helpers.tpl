{{/*
Helpers follow ingress-nginx's _helpers.tpl: every name is prefixed with the chart name, and
object names are truncated to 63 characters (the DNS label limit) and trimmed of a trailing "-".
*/}}

{{/* The app.kubernetes.io/name label: the chart name, or nameOverride. */}}
{{- define "llm-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: the release name, or fullnameOverride. */}}
{{- define "llm-router.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
An object's name: the prefix, then the name the Kustomize overlays give the same object, so
`demo` installs demo-llm-router, demo-cpu-llm-server... Call with (dict "root" $ "name" "...").
Names stay within 63 characters (the DNS label limit).
*/}}
{{- define "llm-router.objectName" -}}
{{- /* Only the prefix is cut, so two objects of a kind never end up with the same name. */ -}}
{{- $prefix := include "llm-router.fullname" .root | trunc (int (sub 62 (len .name))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix .name -}}
{{- end -}}

{{/* The namespace of the DCGM exporter: observability.dcgmExporter.namespace, or the release's. */}}
{{- define "llm-router.dcgmExporterNamespace" -}}
{{- default .Release.Namespace .Values.observability.dcgmExporter.namespace -}}
{{- end -}}

{{/* The helm.sh/chart label. */}}
{{- define "llm-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels that select one component's pods. Call with (dict "root" $ "component" "..."). */}}
{{- define "llm-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-router.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The recommended labels, on every object. Call with (dict "root" $ "component" "..."). */}}
{{- define "llm-router.labels" -}}
helm.sh/chart: {{ include "llm-router.chart" .root }}
{{ include "llm-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: llm-router
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/*
Facts about each cloud's managed Kubernetes, the same as llmctl's catalog.CLOUD_FACTS (a test
compares them): the spot taint its GPU nodes may carry, whether their containerd has an `nvidia`
runtime handler, and whether the NVIDIA device plugin must be deployed (GKE runs its own).
*/}}
{{- define "llm-router.facts" -}}
gpuTaint:
  key: nvidia.com/gpu
  value: present
  effect: NoSchedule
gpuNodeLabels:
  compute: gpu-enabled
acceleratorLabel: llmctl.dev/accelerator
# Pod-side shutdown (llmctl's manifests/render.py: ROUTER_PRESTOP_SECONDS...; a test compares).
shutdown:
  routerPreStopSeconds: 5
  # router.limits.drainDeadlineSeconds when set (the router's default otherwise); the grace
  # period is preStop + drain deadline + margin.
  routerDrainDeadlineSeconds: 60
  routerDrainMarginSeconds: 5
  llamaGraceSeconds: 120
  llamaDrainMarginSeconds: 10
clouds:
  aws:
    spotTaint: null
    nvidiaRuntimeHandler: true
    needsDevicePlugin: true
    hostDriverDir: null
  azure:
    spotTaint:
      key: kubernetes.azure.com/scalesetpriority
      value: spot
      effect: NoSchedule
    nvidiaRuntimeHandler: false
    needsDevicePlugin: true
    hostDriverDir: null
  gcp:
    spotTaint:
      key: cloud.google.com/gke-spot
      value: "true"
      effect: NoSchedule
    nvidiaRuntimeHandler: false
    needsDevicePlugin: false
    hostDriverDir: /home/kubernetes/bin/nvidia
{{- end -}}

{{/* The facts of the cloud chosen by .Values.cloud, as YAML. */}}
{{- define "llm-router.cloudFacts" -}}
{{- $facts := include "llm-router.facts" . | fromYaml -}}
{{- toYaml (index $facts.clouds .Values.cloud) -}}
{{- end -}}

{{/*
Tolerations of pods on llmctl's GPU nodes: the GPU taint, the cloud's spot taint, then
gpu.tolerations; duplicates dropped.
*/}}
{{- define "llm-router.gpuTolerations" -}}
{{- $facts := include "llm-router.facts" . | fromYaml -}}
{{- $cloud := include "llm-router.cloudFacts" . | fromYaml -}}
{{- $tolerations := list (dict "key" $facts.gpuTaint.key "operator" "Exists" "effect" $facts.gpuTaint.effect) -}}
{{- with $cloud.spotTaint -}}
{{- $tolerations = append $tolerations (dict "key" .key "operator" "Equal" "value" .value "effect" .effect) -}}
{{- end -}}
{{- range .Values.gpu.tolerations -}}
{{- $tolerations = append $tolerations . -}}
{{- end -}}
{{- toYaml (uniq $tolerations) -}}
{{- end -}}

{{/* Whether the device plugin DaemonSet is deployed: gpu.devicePlugin.enabled, or (null) the
cloud's need unless kube-system/nvidia-device-plugin, the one `llmctl gpu enable` and the
overlays apply, already runs: NVIDIA supports one plugin per node. `lookup` finds nothing under
`helm template`, which then renders the plugin. */}}
{{- define "llm-router.devicePluginEnabled" -}}
{{- $enabled := .Values.gpu.devicePlugin.enabled -}}
{{- if kindIs "invalid" $enabled -}}
{{- $enabled = and (include "llm-router.cloudFacts" . | fromYaml).needsDevicePlugin (not (lookup "apps/v1" "DaemonSet" "kube-system" "nvidia-device-plugin")) -}}
{{- end -}}
{{- if and .Values.gpu.enabled $enabled -}}true{{- end -}}
{{- end -}}

{{/* Whether the chart creates its RuntimeClass: gpu.runtimeClass.enabled, or (null) unless the
RuntimeClass "nvidia" (`llmctl gpu enable`'s) exists. */}}
{{- define "llm-router.runtimeClassEnabled" -}}
{{- $enabled := .Values.gpu.runtimeClass.enabled -}}
{{- if kindIs "invalid" $enabled -}}
{{- $enabled = not (lookup "node.k8s.io/v1" "RuntimeClass" "" "nvidia") -}}
{{- end -}}
{{- if and .Values.gpu.enabled $enabled -}}true{{- end -}}
{{- end -}}

{{/* The RuntimeClass GPU pods name: the chart's own when it creates one, else "nvidia". */}}
{{- define "llm-router.runtimeClassName" -}}
{{- if include "llm-router.runtimeClassEnabled" . -}}
{{- include "llm-router.objectName" (dict "root" . "name" "nvidia") -}}
{{- else -}}
nvidia
{{- end -}}
{{- end -}}

{{/* imagePullSecrets of llmctl's pods in the release namespace, from imagePullSecrets (names). */}}
{{- define "llm-router.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | toJson }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Spread a component's pods over nodes, then zones, without ever leaving one Pending for it.
Call with (dict "root" $ "component" "...").
*/}}
{{- define "llm-router.spread" -}}
{{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ . }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "llm-router.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The namespace of the device plugin: gpu.devicePlugin.namespace, or the release's. */}}
{{- define "llm-router.devicePluginNamespace" -}}
{{- default .Release.Namespace .Values.gpu.devicePlugin.namespace -}}
{{- end -}}

{{/*
A model's API name: model.name, or the file name of model.path without ".gguf" and without a
quantization suffix (".Q4_K_M", ".q8_0", ".F16"...).
*/}}
{{- define "llm-router.modelName" -}}
{{- if .name -}}
{{- .name -}}
{{- else -}}
{{- regexReplaceAll "\\.([QqFf][0-9]+[A-Za-z0-9_]*|IQ[0-9][A-Za-z0-9_]*)$" (base .path | trimSuffix ".gguf") "" -}}
{{- end -}}
{{- end -}}

{{/* Pod security: the restricted Pod Security Standard, as in the Kustomize overlays. */}}
{{- define "llm-router.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "llm-router.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A resources block: requests and limits, plus extra limits (the GPU). */}}
{{- define "llm-router.resources" -}}
{{- $limits := merge (dict) (.extraLimits | default dict) (.resources.limits | default dict) -}}
{{- $out := dict -}}
{{- with .resources.requests }}{{- $_ := set $out "requests" . -}}{{- end -}}
{{- with $limits }}{{- $_ := set $out "limits" . -}}{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
llama-server's arguments, for the llama.cpp release the images pin. Context is sized per request
exactly as llmctl's config.LlamaCpp does: ctx_size defaults to ctx_per_request x parallel; when
ctx_size / parallel is short of ctx_per_request the KV cache is unified (unless kv_unified is
false), and a config whose slots can't hold one request fails, saying how to fix it.
Call with (dict "model" ... "llamacpp" ... "where" "llamacpp").
*/}}
{{- define "llm-router.llamaArgs" -}}
{{- $l := .llamacpp -}}
{{- $perRequest := int (default 2048 $l.ctx_per_request) -}}
{{- $parallel := int $l.parallel -}}
{{- $ctxSize := mul $perRequest $parallel -}}
{{- if not (kindIs "invalid" $l.ctx_size) -}}
{{- $ctxSize = int64 $l.ctx_size -}}
{{- end -}}
{{- $unified := lt (div $ctxSize $parallel) (int64 $perRequest) -}}
{{- if not (kindIs "invalid" $l.kv_unified) -}}
{{- $unified = $l.kv_unified -}}
{{- end -}}
{{- $perSlot := $ctxSize -}}
{{- if not $unified -}}
{{- $perSlot = div $ctxSize $parallel -}}
{{- end -}}
{{- if lt $perSlot (int64 $perRequest) -}}
{{- $layout := ternary "unified" (printf "split over %d parallel slots" $parallel) $unified -}}
{{- fail (printf "%s: ctx_size %d %s leaves %d tokens per request, less than ctx_per_request %d; raise %s.ctx_size to at least %d (or leave it unset), lower %s.parallel or %s.ctx_per_request%s" .where $ctxSize $layout $perSlot $perRequest .where (ternary (int64 $perRequest) (mul $perRequest $parallel) $unified) .where .where (ternary "" (printf ", or drop %s.kv_unified: false" .where) $unified)) -}}
{{- end -}}
{{- $ngl := int $l.ngl -}}
{{- $args := list "--host" "0.0.0.0" "--port" "8080" "--model" .model.path "--alias" (include "llm-router.modelName" .model) -}}
{{- $args = concat $args (list "--ctx-size" (toString $ctxSize) "--parallel" (toString $parallel)) -}}
{{- $args = concat $args (list "--n-gpu-layers" (ternary "all" (toString $ngl) (lt $ngl 0))) -}}
{{- $args = concat $args (list "--flash-attn" (ternary "on" "off" $l.flash_attn) "--metrics") -}}
{{- /* Nothing but the router talks to llama-server: no Web UI, no /slots (prompts in flight). */ -}}
{{- $args = concat $args (list "--no-webui" "--no-slots") -}}
{{- if not (kindIs "invalid" $l.device) -}}
{{- $args = concat $args (list "--device" $l.device) -}}
{{- end -}}
{{- if not (kindIs "invalid" $l.threads) -}}
{{- $args = concat $args (list "--threads" (toString (int $l.threads))) -}}
{{- end -}}
{{- if $unified -}}
{{- $args = append $args "--kv-unified" -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/* The router's router.yaml: the schema of llmctl's router/table.py RouterConfig. */}}
{{- define "llm-router.routerConfig" -}}
{{- $ns := .Release.Namespace -}}
{{- $cpuName := include "llm-router.modelName" .Values.cpu.model -}}
{{- $models := list (dict "name" $cpuName "parameters" (int64 .Values.cpu.model.parameters) "aliases" (.Values.cpu.model.aliases | default list)) -}}
{{- $cpuUrl := printf "http://%s.%s.svc.cluster.local:8080" (include "llm-router.objectName" (dict "root" . "name" "cpu-llm-server")) $ns -}}
{{- $backends := list (dict "name" (printf "%s/cpu" .Values.cloud) "url" $cpuUrl "tier" "cpu" "cloud" .Values.cloud "model" $cpuName "slots" (int .Values.cpu.llamacpp.parallel) "costWeight" .Values.cpu.backend.costWeight "hourlyCostUsd" .Values.cpu.backend.hourlyCostUsd) -}}
{{- if .Values.gpu.enabled -}}
{{- $gpuName := include "llm-router.modelName" .Values.model -}}
{{- if ne $gpuName $cpuName -}}
{{- $models = append $models (dict "name" $gpuName "parameters" (int64 .Values.model.parameters) "aliases" (.Values.model.aliases | default list)) -}}
{{- end -}}
{{- $gpuUrl := printf "http://%s.%s.svc.cluster.local:8080" (include "llm-router.objectName" (dict "root" . "name" "gpu-llm-server")) $ns -}}
{{- $backends = append $backends (dict "name" (printf "%s/gpu" .Values.cloud) "url" $gpuUrl "tier" "gpu" "cloud" .Values.cloud "model" $gpuName "slots" (int .Values.llamacpp.parallel) "costWeight" .Values.gpu.backend.costWeight "hourlyCostUsd" .Values.gpu.backend.hourlyCostUsd) -}}
{{- end -}}
{{- $policy := dict "gpuParameterThreshold" (int64 .Values.router.policy.gpuParameterThreshold) "gpuComplexities" .Values.router.policy.gpuComplexities "fallbackModel" $cpuName -}}
{{- $apiKeys := dict "file" nil "env" nil -}}
{{- if .Values.router.apiKeys.secretName -}}
{{- $_ := set $apiKeys "env" "LLM_ROUTER_API_KEYS" -}}
{{- end -}}
{{- /* issue 31: named keys (the Secret's entries are then name:secret) and the budgets' store */ -}}
{{- with .Values.router.apiKeys.keys -}}
{{- $_ := set $apiKeys "keys" . -}}
{{- end -}}
{{- with .Values.router.apiKeys.budgetStore -}}
{{- $_ := set $apiKeys "budgetStore" . -}}
{{- end -}}
{{- include "llm-router.checkRouterSettings" . -}}
{{- $config := dict "cloud" .Values.cloud "models" $models "backends" $backends "policy" $policy "limits" .Values.router.limits "healthCheck" .Values.router.healthCheck "apiKeys" $apiKeys -}}
{{- with .Values.router.gpuWait -}}
{{- /* issue 31: written only when set, as llmctl render does; the router's defaults apply */ -}}
{{- $_ := set $config "gpuWait" . -}}
{{- end -}}
{{- if .Values.federation.enabled -}}
{{- /* issue 16: the other clouds' routers; the defaults of router/peer_config.py */ -}}
{{- $peers := list -}}
{{- range .Values.federation.peers -}}
{{- $peers = append $peers (dict "name" .name "cloud" .cloud "url" .url "costWeight" (.costWeight | default 1.0)) -}}
{{- end -}}
{{- $_ := set $config "federation" (dict "peers" $peers "peerKey" (dict "file" nil "env" "LLM_ROUTER_PEER_KEY") "countPeerServedDemand" .Values.federation.countPeerServedDemand "readinessIntervalSeconds" 2.0 "connectTimeoutSeconds" 2.0 "firstByteTimeoutSeconds" nil "ewmaAlpha" 0.3 "caFile" nil) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The rules across router.apiKeys and router.gpuWait that the values schema cannot say: the
     same as the router's (config/router_settings.py), so a release never starts a router that
     refuses its config. */}}
{{- define "llm-router.checkRouterSettings" -}}
{{- $keys := .Values.router.apiKeys.keys | default list -}}
{{- $names := list -}}
{{- $budgeted := list -}}
{{- range $keys -}}
{{- if has .name $names -}}
{{- fail (printf "router.apiKeys.keys: key names must be unique; repeated: %s" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- if not (kindIs "invalid" .gpuTokensPerDay) -}}
{{- $budgeted = append $budgeted .name -}}
{{- end -}}
{{- end -}}
{{- if and $keys (not .Values.router.apiKeys.secretName) -}}
{{- fail "router.apiKeys.keys: named keys need router.apiKeys.secretName for their secrets (its entries are then name:secret)" -}}
{{- end -}}
{{- if and $budgeted (not .Values.router.apiKeys.budgetStore) -}}
{{- fail (printf "router.apiKeys.keys: gpuTokensPerDay (keys %s) needs router.apiKeys.budgetStore.prometheusUrl" (join ", " $budgeted)) -}}
{{- end -}}
{{- $wait := .Values.router.gpuWait | default dict -}}
{{- $default := $wait.defaultSeconds | default 0 -}}
{{- $max := $wait.maxSeconds | default 120 -}}
{{- if gt (float64 $default) (float64 $max) -}}
{{- fail (printf "router.gpuWait: gpuWait.defaultSeconds must not be longer than maxSeconds (%v > %v)" $default $max) -}}
{{- end -}}
{{- end -}}

{{/* How long a proxy in front (router.expose) must wait for the router's first byte: the
     longest GPU wait plus the backend's first byte, at least 300 s (a long generation), at
     most 99999 s (a Gateway API Duration in seconds has 5 digits). As llmctl render's
     manifests/routing.py proxy_timeout_seconds. */}}
{{- define "llm-router.proxyTimeoutSeconds" -}}
{{- $wait := .Values.router.gpuWait | default dict -}}
{{- $max := $wait.maxSeconds | default 120 -}}
{{- $first := .Values.router.limits.firstByteTimeoutSeconds | default 120 -}}
{{- min 99999 (max 300 (int64 (ceil (addf $max $first)))) -}}
{{- end -}}
