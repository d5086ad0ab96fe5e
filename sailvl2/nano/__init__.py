"""The nano SAIL-VL2: a CPU-sized model trained by our own pipeline on generated data (issue 4)."""
