"""Where a component's files are, reading its JSON configs, and which model family a checkpoint holds.

One set of rules for the transformer, DC-AE and text-encoder loaders. A component is given as a weight file, as its
own folder (``config.json`` + weights) or as a whole diffusers repo holding it as ``<component>/``. In a folder the
weights are, for each stem in the order given and each variant in ``VARIANTS`` order, the first of: a sharded index,
a single safetensors file, a ``.bin``; failing those, the folder's only ``*.safetensors`` file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, unique
from pathlib import Path

from .errors import SanaError

VARIANTS = ("", ".bf16", ".fp16", ".fp32")  # diffusers' variant names, the plain (full-precision) file first


# --- where the files are -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Located:
    """A component as given: a weight file, or the component's folder (``repo`` set when that is ``repo/<name>/``)."""

    path: Path
    repo: Path | None = None

    @property
    def is_file(self) -> bool:
        return self.path.is_file()

    @property
    def config(self) -> Path | None:
        """The folder's ``config.json``; None for a folder without one and for a single file."""
        cfg = self.path / "config.json"
        return cfg if not self.is_file and cfg.is_file() else None

    def weights(self, stems: tuple[str, ...], what: str) -> Path:
        """The weight file itself, or the one ``find_weights`` picks in the folder."""
        return self.path if self.is_file else find_weights(self.path, stems, what)


def locate(path: str | os.PathLike, component: str) -> Located:
    """A weight file, a component folder, or a repo holding ``<component>/`` (a folder without a config.json)."""
    path = Path(path)
    if not path.exists():
        raise SanaError(f"{path}: not found")
    if path.is_dir() and (path / component).is_dir() and not (path / "config.json").exists():
        return Located(path / component, repo=path)
    return Located(path)


def find_weights(folder: Path, stems: tuple[str, ...], what: str) -> Path:
    """The weights in a component folder; ``what`` names the component in the error when there are none."""
    for stem in stems:
        for v in VARIANTS:
            # diffusers and transformers name a variant's index <stem>.safetensors.index<v>.json and its shards
            # <stem><v>-0000i-of-0000n.safetensors; <stem><v>.safetensors.index.json is taken too
            names = (f"{stem}.safetensors.index{v}.json", f"{stem}{v}.safetensors.index.json", f"{stem}{v}.safetensors",
                     f"{stem}{v}.bin")
            for name in dict.fromkeys(names):
                if (folder / name).is_file():
                    return folder / name
    loose = sorted(folder.glob("*.safetensors"))
    if len(loose) == 1:
        return loose[0]
    expected = " or ".join(f"{stem}[{'|'.join(VARIANTS[1:])}].safetensors" for stem in stems)
    raise SanaError(f"{folder}: no {what} weights in this folder (found: {listing(folder)}); expected {expected}, "
                    "its sharded .safetensors.index.json, or a single *.safetensors file")


def listing(folder: Path) -> str:
    """A folder's entries for an error message (folders end in '/'; at most 20 named)."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:20]) + (f", … ({len(names)} entries)" if len(names) > 20 else "") if names else "nothing"


# --- configs -------------------------------------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    """A JSON object from a file; a SanaError naming the file when it is not valid JSON or not an object."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SanaError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SanaError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


# --- what a checkpoint holds ---------------------------------------------------------------------------------------

@unique
class Family(Enum):
    """A checkpoint's model family, told from its key names by ``sniff``.

    Each value is (what it is, as an error says it; advice for a file given to the wrong loader; its key layout).
    """

    SANA_DIFFUSERS = ("a Sana transformer", "load it with Sana Load Transformer", "diffusers")
    SANA_NVLABS = ("a Sana transformer", "load it with Sana Load Transformer", "NVlabs")
    SANA_CONTROLNET = ("a Sana ControlNet", "load it with Sana Load ControlNet", "diffusers")
    SANA_CONTROLNET_NVLABS = ("a Sana ControlNet", "load it with Sana Load ControlNet", "NVlabs")
    CONTROLNET_SD = ("a Stable Diffusion / SDXL ControlNet", None, "")
    CONTROLNET_FLUX = ("a Flux ControlNet", None, "")
    DCAE_DIFFUSERS = ("a DC-AE autoencoder", "load it with Sana Load DC-AE", "diffusers")
    DCAE_ORIGINAL = ("a DC-AE autoencoder", "load it with Sana Load DC-AE", "original mit-han-lab")
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
        return Family.SANA_DIFFUSERS
    if has(r"blocks\.\d+\.attn\.qkv\.weight") and has(r"blocks\.\d+\.cross_attn\.kv_linear\.weight"):
        return Family.SANA_NVLABS
    if "encoder.project_in.conv.bias" in keys:
        return Family.DCAE_ORIGINAL
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
