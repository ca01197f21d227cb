"""`llmctl test-inference`: the HTTP client, the GPU check pod and the port-forward adapter."""
