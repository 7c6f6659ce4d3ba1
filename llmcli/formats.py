"""File-format facts shared by the store (what to download) and the backends (what to load),
which must not import each other."""

from __future__ import annotations

# Weights in Python's pickle format, which can run code when loaded: never downloaded, loaded
# only with --allow-pickle. Matched case-insensitively against file names.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
