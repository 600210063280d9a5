"""Which model family a checkpoint holds, told from its key names alone, and the error for a file given to the
wrong loader."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum, unique

from ..errors import SanaError


@unique
class Family(Enum):
    """A checkpoint's model family, told from its key names by ``sniff``.

    Each value is (what it is, as an error says it; advice for a file given to the wrong loader; its key layout).
    """

    SANA_DIFFUSERS = ("a Sana transformer", "load it with Sana Load Transformer", "diffusers")
    SANA_NVLABS = ("a Sana transformer", "load it with Sana Load Transformer", "NVlabs")
    SANA_VIDEO = ("a SANA-Video transformer", "load it with Sana Load Transformer (load_video_transformer)",
                  "diffusers")
    SANA_VIDEO_NVLABS = ("a SANA-Video transformer", "load it with Sana Load Transformer (load_video_transformer)",
                         "NVlabs")
    SANA_CONTROLNET = ("a Sana ControlNet", "load it with Sana Load ControlNet", "diffusers")
    SANA_CONTROLNET_NVLABS = ("a Sana ControlNet", "load it with Sana Load ControlNet", "NVlabs")
    CONTROLNET_SD = ("a Stable Diffusion / SDXL ControlNet", None, "")
    CONTROLNET_FLUX = ("a Flux ControlNet", None, "")
    DCAE_DIFFUSERS = ("a DC-AE autoencoder", "load it with Sana Load DC-AE", "diffusers")
    DCAE_ORIGINAL = ("a DC-AE autoencoder", "load it with Sana Load DC-AE", "original mit-han-lab")
    WAN_VAE = ("a Wan video VAE", "load it with ComfyUI's Load VAE (or a whole SANA-Video repo)", "")
    DCAE_OTHER = ("an original DC-AE of a non-Sana variant (f32c32-in, f64, f128)",
                  "but only the f32c32 Sana DC-AE is supported", "original mit-han-lab")
    KL_VAE = ("an SD/Flux-style KL VAE (AutoencoderKL)", None, "")
    AUTOENCODER = ("an autoencoder (VAE)", None, "")
    UNET = ("a Stable Diffusion / SDXL UNet", None, "")
    FLUX = ("a Flux transformer", None, "")
    SD3 = ("an SD3 MMDiT", None, "")
    GEMMA = ("a Gemma text encoder", "load it with Sana Load Text Encoder", "")
    LANGUAGE_MODEL = ("a language model (text encoder)", None, "")
    UNKNOWN = ("an unrecognised key set", None, "")

    def __init__(self, label: str, advice: str | None, layout: str) -> None:
        self.label = label
        self.advice = advice
        self.layout = layout

    def describe(self) -> str:
        """'a Flux transformer', 'a Sana transformer, load it with the transformer loader'."""
        return f"{self.label}, {self.advice}" if self.advice else self.label


# A KL autoencoder's own modules: diffusers' quant convs and mid blocks, ldm's down.N / up.N / mid.
_KL_PREFIXES = ("quant_conv.", "post_quant_conv.", "encoder.mid_block.", "decoder.mid_block.", "encoder.mid.",
                "decoder.mid.", "encoder.down.", "decoder.up.")


def sniff(sd: Mapping[str, object]) -> Family:
    """The model family of a state dict (wrapper prefixes already stripped), from its key names alone."""
    keys = sd.keys()

    def has(pattern: str) -> bool:
        return any(re.match(pattern, k) for k in keys)

    if "input_hint_block.0.weight" in keys or has(r"zero_convs\.\d+\."):
        return Family.CONTROLNET_SD
    if "controlnet_x_embedder.weight" in keys or has(r"controlnet_single_blocks\.\d+\."):
        return Family.CONTROLNET_FLUX
    if has(r"controlnet\.\d+\.(before_proj|after_proj|copied_block)\."):
        return Family.SANA_CONTROLNET_NVLABS
    if "input_block.weight" in keys and has(r"controlnet_blocks\.\d+\.weight"):
        return Family.SANA_CONTROLNET
    if has(r"transformer_blocks\.\d+\.attn1\.to_q\.weight") and "caption_projection.linear_1.weight" in keys:
        # SANA-Video has the image model's names too, plus a 3-D patch embed (Wan's name) and a temporal conv in
        # each Mix-FFN
        if "patch_embedding.weight" in keys or has(r"transformer_blocks\.\d+\.ff\.conv_temp\."):
            return Family.SANA_VIDEO
        return Family.SANA_DIFFUSERS
    if has(r"blocks\.\d+\.attn\.qkv\.weight") and has(r"blocks\.\d+\.cross_attn\.kv_linear\.weight"):
        return Family.SANA_VIDEO_NVLABS if has(r"blocks\.\d+\.mlp\.t_conv\.") else Family.SANA_NVLABS
    if "encoder.project_in.conv.bias" in keys:
        return Family.DCAE_ORIGINAL
    # Wan's causal 3-D VAE: RMS norms with a 'gamma' in each residual block (its own names, and diffusers')
    if "decoder.middle.0.residual.0.gamma" in keys or "decoder.mid_block.resnets.0.norm1.gamma" in keys:
        return Family.WAN_VAE
    if any(k.startswith(_KL_PREFIXES) for k in keys) or has(r"(encoder|decoder)\.(down|up)_blocks\.\d+\.resnets\."):
        return Family.KL_VAE
    if "encoder.conv_in.weight" in keys and "decoder.conv_in.weight" in keys:
        return Family.DCAE_DIFFUSERS
    if has(r"encoder\.project_in\.conv\.conv\."):
        return Family.DCAE_OTHER
    if has(r"(encoder|decoder)\.(conv_in|project_in)") and has(r"(encoder|decoder)\.(down_blocks|up_blocks|stages)"):
        return Family.AUTOENCODER
    if has(r"(model\.diffusion_model\.)?input_blocks\.\d+") or has(r"down_blocks\.\d+\.resnets"):
        return Family.UNET
    if has(r"(model\.diffusion_model\.)?double_blocks\.\d+") or has(r"single_transformer_blocks\.\d+"):
        return Family.FLUX
    # diffusers' SD3 has Flux's joint attention (add_q_proj, …) but no single-stream blocks
    if has(r"(model\.diffusion_model\.)?joint_blocks\.\d+") or has(r"transformer_blocks\.\d+\.attn\.add_q_proj"):
        return Family.SD3
    if has(r"(model\.)?layers\.\d+\.pre_feedforward_layernorm\."):  # Gemma-2 and later
        return Family.GEMMA
    if has(r"(model\.)?layers\.\d+\.self_attn\.") or has(r"(model\.)?embed_tokens\."):
        return Family.LANGUAGE_MODEL
    return Family.UNKNOWN


def wrong_family(source: str, sd: Mapping[str, object], family: Family, wanted: str, expected: str) -> SanaError:
    """The error for a checkpoint that ``sniff`` says is not ``wanted``: what it looks like, where it belongs."""
    if family is Family.UNKNOWN:
        what = f"not {wanted}"
    else:
        what = f"this looks like {family.label}, {family.advice or f'not {wanted}'}"
    return SanaError(f"{source}: {what}. Found {key_summary(sd)}; expected {expected}")


def key_summary(sd: Mapping[str, object]) -> str:
    """'73 tensors (e.g. [three names])': what a file holds, for an error message."""
    keys = sorted(sd)
    return f"{len(keys)} tensors (e.g. {keys[:3]})"
