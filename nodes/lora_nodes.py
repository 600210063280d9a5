"""LoRA loaders for Sana, as ComfyUI's LoraLoader and LoraLoaderModelOnly: files from the ``loras`` folder, a patched
clone out (sharing the base weights), the inputs never changed; chained loaders stack."""

from __future__ import annotations

import copy
import os

from ..sana_core import lora
from . import host
from .models import SanaModel, SanaTextEncoderHandle
from .widgets import SANA_MODEL, SANA_TEXT_ENCODER, STRENGTH, check_model, model_input

CATEGORY = "Sana"
_FILES: dict[str, tuple[float, dict]] = {}  # path → (mtime, tensors): the last file read, as LoraLoader keeps it


def read_lora(name: str) -> tuple[dict, str]:
    path = host.resolve_model("loras", name)
    mtime = os.path.getmtime(path)
    kept = _FILES.get(str(path))
    if kept is None or kept[0] != mtime:
        _FILES.clear()
        kept = _FILES[str(path)] = (mtime, lora.read(path))
    return kept[1], name


def lora_model(model: SanaModel, sd: dict, name: str, strength: float) -> SanaModel:
    handle = host.add_lora(model.handle, sd, "transformer", strength, name)
    return SanaModel(handle, f"{model.source} + {name}@{strength:g}")


def lora_text_encoder(te: SanaTextEncoderHandle, sd: dict, name: str, strength: float) -> SanaTextEncoderHandle:
    handle = host.add_lora(te.handle, sd, "text_encoder", strength, name)
    encoder = te.encoder
    if host.unwrap(handle) is not host.unwrap(te.handle):  # outside ComfyUI: a new module, so a new encoder over it
        encoder = copy.copy(te.encoder)
        encoder.__dict__ = {k: v for k, v in te.encoder.__dict__.items() if not k.startswith("_sana_")}
        encoder.model = host.unwrap(handle)
    return SanaTextEncoderHandle(handle, encoder, f"{te.source} + {name}@{strength:g}")


def split(sd: dict) -> tuple[dict, dict]:
    """A file's transformer part and its Gemma-2 part."""
    marks = tuple(p for p in sum(lora.PREFIXES["text_encoder"], ()) if p)
    te = {k: v for k, v in sd.items() if k.startswith(marks)}
    return {k: v for k, v in sd.items() if k not in te}, te


class SanaLoraLoader:
    CATEGORY = CATEGORY
    DESCRIPTION = ("Applies a LoRA (models/loras) to a Sana model and its Gemma-2 text encoder, as ComfyUI's LoRA "
                   "loader; every published Sana LoRA layout is read.")
    RETURN_TYPES = ("SANA_MODEL", "SANA_TEXT_ENCODER")
    RETURN_NAMES = ("model", "text_encoder")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": SANA_MODEL,
            "text_encoder": SANA_TEXT_ENCODER,
            "lora_name": model_input("loras", folders=False),
            "strength_model": STRENGTH,
            "strength_text_encoder": STRENGTH,
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return check_model("loras", lora_name, folders=False)

    def load(self, model, text_encoder, lora_name, strength_model, strength_text_encoder):
        sd, name = read_lora(lora_name)
        model_sd, te_sd = split(sd)
        if model_sd or not te_sd:
            model = lora_model(model, model_sd or sd, name, strength_model)
        if te_sd:
            text_encoder = lora_text_encoder(text_encoder, te_sd, name, strength_text_encoder)
        return (model, text_encoder)


class SanaLoraLoaderModelOnly:
    CATEGORY = CATEGORY
    DESCRIPTION = "Applies a LoRA (models/loras) to a Sana model only, as ComfyUI's LoraLoaderModelOnly."
    RETURN_TYPES = ("SANA_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": SANA_MODEL,
            "lora_name": model_input("loras", folders=False),
            "strength_model": STRENGTH,
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return check_model("loras", lora_name, folders=False)

    def load(self, model, lora_name, strength_model):
        sd, name = read_lora(lora_name)
        model_sd, _ = split(sd)  # a text encoder part is left out, as LoraLoaderModelOnly leaves out CLIP's
        return (lora_model(model, model_sd or sd, name, strength_model),)


LORA_NODES = {c.__name__: c for c in (SanaLoraLoader, SanaLoraLoaderModelOnly)}
LORA_DISPLAY_NAMES = {"SanaLoraLoader": "Sana LoRA Loader", "SanaLoraLoaderModelOnly": "Sana LoRA Loader (model only)"}
