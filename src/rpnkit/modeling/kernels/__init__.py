"""GPU kernels (Triton). Imported lazily: the package works without Triton or a GPU."""
