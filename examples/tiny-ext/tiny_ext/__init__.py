"""One compiled op, `scale_add(x, a) = x * a + 1`, and the torch version it was compiled with."""

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.tiny_ext)


def scale_add(x: torch.Tensor, a: float) -> torch.Tensor:
    return torch.ops.tiny_ext.scale_add(x, a)


def compiled_torch_version() -> str:
    return torch.ops.tiny_ext.compiled_torch_version()


__all__ = ["compiled_torch_version", "scale_add"]
