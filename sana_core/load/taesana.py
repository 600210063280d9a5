"""Loading the TAESANA preview decoder (``sana_core/taesana.py``) from its published ``taesana_decoder.pth``."""

from __future__ import annotations

import torch
from torch import nn

from ..taesana import taesana_decoder
from .tensors import load_into, read_weights


def load_taesana_decoder(path, device="cpu") -> nn.Sequential:
    """The decoder in fp32 on ``device``, filled strictly from the file."""
    with torch.device("meta"):
        dec = taesana_decoder()
    load_into(dec, read_weights(path), torch.float32, str(path))
    return dec.to(device).eval().requires_grad_(False)
