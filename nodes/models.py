"""The typed objects that travel between Sana nodes (SANA_MODEL, SANA_TEXT_ENCODER, SANA_VAE).

Each holds a host handle (a ModelPatcher inside ComfyUI) so the host can evict it; ``get()`` brings the module onto
its compute device and returns it. The objects are never mutated after they leave their loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sana_core.errors import SanaError
from ..sana_core.load import variant_name, video_variant_name
from ..sana_core.video import is_video
from . import host


def _params(m: torch.nn.Module) -> str:
    n = sum(p.numel() for p in m.parameters()) / 1e6
    return f"{n:,.0f}M params" if n >= 10 else f"{n:.3g}M params"


@dataclass(frozen=True)
class _Handle:
    handle: object  # ModelPatcher in ComfyUI, the module itself outside
    source: str

    def get(self, memory_required: int = 0):
        """The module on its compute device; ``memory_required``: bytes the call will need besides the weights."""
        return host.load(self.handle, memory_required)

    @property
    def module(self) -> torch.nn.Module:
        return host.unwrap(self.handle)


class SanaModel(_Handle):
    @property
    def cfg(self):
        return self.module.cfg

    @property
    def summary(self) -> dict:
        """What the frontend reads of a loaded model (the loaders' ``sana_model`` UI output)."""
        m = self.module
        name = video_variant_name(m.cfg) if is_video(m.cfg) else variant_name(m.cfg)
        return {"variant": name, "resolution": m.cfg.resolution, "video": is_video(m.cfg),
                "dtype": str(m.dtype).removeprefix("torch."), "params": sum(p.numel() for p in m.parameters())}

    @property
    def info(self) -> str:
        s = self.summary
        size = f"{s['resolution']}p" if s["video"] else f"{s['resolution']} px"
        return f"{s['variant']} · {size} · {s['dtype']} · {_params(self.module)}"


@dataclass(frozen=True)
class SanaTextEncoderHandle:
    handle: object
    encoder: object  # sana_core.text_encoder.SanaTextEncoder (its .model is what the handle manages)
    source: str

    def get(self):
        host.load(self.handle)
        return self.encoder

    def release(self) -> None:
        host.release(self.handle)

    @property
    def info(self) -> str:
        return f"Gemma-2 · {str(self.encoder.dtype).removeprefix('torch.')} · {_params(self.encoder.model)}"


class SanaVAE(_Handle):
    @property
    def info(self) -> str:
        return f"DC-AE f32c32 · {str(self.module.dtype).removeprefix('torch.')} · {_params(self.module)}"

    def check_dcae(self, node: str, instead: str) -> None:
        """Nothing for the DC-AE; for a SANA-Video repo's Wan VAE, the error naming the nodes to use."""

    def native(self):
        """This autoencoder as ComfyUI's VAE (the same weights)."""
        return host.vae_adapter(self.handle)


class SanaWanVAE(SanaVAE):
    """A SANA-Video repo's Wan 2.1 VAE on Sana Load Pipeline's SANA_VAE output; ``handle`` is ComfyUI's VAE (the
    loader's VAE output). The DC-AE nodes refuse it by name."""

    @property
    def info(self) -> str:
        return f"Wan 2.1 VAE · {str(self.handle.vae_dtype).removeprefix('torch.')}"

    def native(self):
        return self.handle

    def check_dcae(self, node: str, instead: str) -> None:
        raise SanaError(f"{node} takes the DC-AE of a Sana image repo; this is a SANA-Video repo's Wan 2.1 VAE: "
                        f"connect Sana Load Pipeline's VAE output to {instead}")
