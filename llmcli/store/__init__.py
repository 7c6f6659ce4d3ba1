"""Model references, the local registry and hub downloads. Never loads a model."""
