# fetch-model, the llama.cpp pods' init container, in the router image (which carries curl).
# One file for the Kustomize render and the chart: the fetcher is swapped here. It resumes
# across restarts; a connection not made in 20 s, or a transfer under 1 KiB/s for 60 s (a
# stall), fails and is retried; HF_TOKEN (from an optional Secret) is sent for gated models.
set -eu
if [ -s "$MODEL_PATH" ]; then echo "model present: $MODEL_PATH"; exit 0; fi
echo "downloading $MODEL_URI"
set -- --fail --location --retry 5 --retry-delay 10 --connect-timeout 20 \
  --speed-limit 1024 --speed-time 60 --continue-at - --output "$MODEL_PATH.part"
if [ -n "${HF_TOKEN:-}" ]; then
  # curl drops this header on a redirect to another host (the Hub's signed CDN URLs).
  set -- "$@" --header "Authorization: Bearer $HF_TOKEN"
fi
curl "$@" "$MODEL_URI"
if [ -n "${MODEL_SHA256:-}" ]; then
  echo "$MODEL_SHA256  $MODEL_PATH.part" | sha256sum -c - || { rm -f "$MODEL_PATH.part"; exit 1; }
fi
mv "$MODEL_PATH.part" "$MODEL_PATH"
echo "model fetched: $MODEL_PATH"
