"""What torch the probe was built against (probe/_built.py is written by setup.py)."""

from ._built import CUDA, TORCH

__all__ = ["CUDA", "TORCH"]
