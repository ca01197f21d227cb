"""The model cache (issue 30): a GGUF copied once into an object store beside the cluster, and
the pod-side fetcher that pulls it to local disk with parallel ranged GETs.

- `locations`: store URIs (s3://, gs://, azure://), the object names llmctl uses. Pure.
- `requests`: signing and credentials for the three stores, standard library only.
- `fetch`: the pod's fetcher (runs in the router image: standard library only).
- `push`: `llmctl model push`, the one part that uses the cloud SDKs (imported lazily).
"""
