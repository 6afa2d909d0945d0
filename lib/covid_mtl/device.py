"""Which torch device to run on (training and prediction both ask here)."""
from __future__ import annotations

import torch

from .errors import CovidMTLError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (an unusable device raises)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CovidMTLError("device 'cuda' requested but CUDA is not available")
    return device
