"""llmctl: llama.cpp model serving on Kubernetes across AWS, Azure and GCP."""

__version__ = "0.1.0"
