"""LoRA loaders for Sana, as ComfyUI's LoraLoader and LoraLoaderModelOnly: files from the ``loras`` folder, a patched
clone out (sharing the base weights), the inputs never changed; chained loaders stack."""

from __future__ import annotations

import os

from comfy_api.latest import io

from ..sana_core import lora
from . import host
from . import widgets as w
from .models import SanaModel, SanaTextEncoderHandle

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
    return SanaTextEncoderHandle(handle, te.encoder, f"{te.source} + {name}@{strength:g}")


def split(sd: dict) -> tuple[dict, dict]:
    """A file's transformer part and its Gemma-2 part."""
    marks = tuple(p for p in sum(lora.PREFIXES["text_encoder"], ()) if p)
    te = {k: v for k, v in sd.items() if k.startswith(marks)}
    return {k: v for k, v in sd.items() if k not in te}, te


def _lora_name() -> io.Combo.Input:
    return w.model_input("lora_name", "loras", folders=False)


class SanaLoraLoader(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoraLoader", "Sana LoRA Loader", CATEGORY,
            "Applies a LoRA (models/loras) to a Sana model and its Gemma-2 text encoder, as ComfyUI's LoRA loader; "
            "every published Sana LoRA layout is read.",
            [w.sana_model(), w.sana_text_encoder(), _lora_name(), w.strength("strength_model"),
             w.strength("strength_text_encoder")],
            [w.SanaModelType.Output(display_name="model"), w.SanaTextEncoderType.Output(display_name="text_encoder")],
            aliases=("LoRA", "LoraLoader", "LyCORIS", "LoKr", "LoHa"))

    validate_inputs = w.model_check("loras", "lora_name", folders=False)

    @classmethod
    def execute(cls, model, text_encoder, lora_name, strength_model, strength_text_encoder) -> io.NodeOutput:
        sd, name = read_lora(lora_name)
        model_sd, te_sd = split(sd)
        if model_sd or not te_sd:
            model = lora_model(model, model_sd or sd, name, strength_model)
        if te_sd:
            text_encoder = lora_text_encoder(text_encoder, te_sd, name, strength_text_encoder)
        return io.NodeOutput(model, text_encoder)


class SanaLoraLoaderModelOnly(io.ComfyNode):
    define_schema = w.node_schema(
            "SanaLoraLoaderModelOnly", "Sana LoRA Loader (model only)", CATEGORY,
            "Applies a LoRA (models/loras) to a Sana model only, as ComfyUI's LoraLoaderModelOnly.",
            [w.sana_model(), _lora_name(), w.strength("strength_model")],
            [w.SanaModelType.Output(display_name="model")],
            aliases=("LoRA", "LoraLoaderModelOnly", "LyCORIS"))

    validate_inputs = w.model_check("loras", "lora_name", folders=False)

    @classmethod
    def execute(cls, model, lora_name, strength_model) -> io.NodeOutput:
        sd, name = read_lora(lora_name)
        model_sd, _ = split(sd)  # a text encoder part is left out, as LoraLoaderModelOnly leaves out CLIP's
        return io.NodeOutput(lora_model(model, model_sd or sd, name, strength_model))


NODES = (SanaLoraLoader, SanaLoraLoaderModelOnly)
