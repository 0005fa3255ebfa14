"""Pick the compute device once, so every part of the model agrees on it."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``auto`` to CUDA, then Apple MPS, then CPU; pass explicit names through.

    Asking for ``cuda`` on a machine without it is an error rather than a silent
    fallback, because a user who asks for the GPU wants to know it is not there.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    if name not in {"cpu", "mps"} and not name.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    return torch.device(name)
