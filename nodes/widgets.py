"""The nodes' shared typed inputs (each with its tooltip), the pack's own value types, one ``schema`` builder, and the
model folders the loaders read: where each kind of file goes, which repository to get, and the message a loader
gives when its file is missing."""

from __future__ import annotations

import copy
import dataclasses
import inspect

from comfy_api.latest import io

from . import host

# The values that travel between Sana nodes (nodes/models.py); the frontend matches sockets by these names.
SanaModelType = io.Custom("SANA_MODEL")
SanaTextEncoderType = io.Custom("SANA_TEXT_ENCODER")
SanaVAEType = io.Custom("SANA_VAE")

# Schema fields newer hosts read (search in the node library); older hosts' Schema has no such field.
_SCHEMA_FIELDS = {f.name for f in dataclasses.fields(io.Schema)}


def schema(node_id: str, display_name: str, category: str, description: str, inputs: list, outputs: list,
           aliases: tuple[str, ...] = ()) -> io.Schema:
    """A node's schema; ``aliases`` are search terms, given to hosts whose schema takes them."""
    extra = {"search_aliases": list(aliases)} if aliases and "search_aliases" in _SCHEMA_FIELDS else {}
    return io.Schema(node_id=node_id, display_name=display_name, category=category, description=description,
                     inputs=inputs, outputs=outputs, **extra)


def node_schema(node_id: str, display_name: str, category: str, description: str, inputs: list, outputs: list,
                aliases: tuple[str, ...] = ()) -> classmethod:
    """A node's ``define_schema``: the schema declared once, a fresh copy each time the host asks (it finalizes the
    copy in place); model lists are read anew at each listing (``ModelCombo``)."""
    declared = schema(node_id, display_name, category, description, inputs, outputs, aliases)
    return classmethod(lambda cls: copy.deepcopy(declared))


class ModelCombo(io.Combo.Input):
    """A combo of the files and folders in one model folder key, listed anew whenever the host reads the schema."""

    def __init__(self, name: str, key: str, folders: bool, files: bool):
        super().__init__(name, options=[], tooltip=where(key))
        self.listing = (key, folders, files)

    def as_dict(self):
        self.options = host.list_models(*self.listing)
        return super().as_dict()


# models/<key> → (what goes there, the repository to get)
FOLDERS = {
    "diffusers": ("a whole Sana diffusers repo (a folder)", "Efficient-Large-Model/Sana_600M_1024px_diffusers"),
    "diffusion_models": ("a Sana transformer: a whole repo folder, its transformer/ folder, a single .safetensors "
                         "or an NVlabs .pth", "Efficient-Large-Model/Sana_600M_1024px_diffusers"),
    "text_encoders": ("Gemma-2-2B-it (a folder) or a whole Sana repo", "Efficient-Large-Model/gemma-2-2b-it"),
    "vae": ("the DC-AE f32c32: a folder, the vae/ folder of a Sana repo, or a single file",
            "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"),
    "loras": ("a Sana LoRA .safetensors in any published layout", None),
    "controlnet": ("a Sana ControlNet: a diffusers folder, a single .safetensors or an NVlabs .pth",
                   "Efficient-Large-Model/Sana_600M_1024px_ControlNet_HED"),
}


def where(key: str) -> str:
    what, repo = FOLDERS[key]
    get = f", e.g. {repo} from Hugging Face" if repo else ""
    return f"{what}, in ComfyUI's models/{key}/ folder{get}"


def model_input(name: str, key: str, folders: bool = True, files: bool = True) -> ModelCombo:
    """A combo of the files and folders in the ``key`` model folders, with a tooltip saying what goes there."""
    return ModelCombo(name, key, folders, files)


def check_model(key: str, name: str, folders: bool = True, files: bool = True) -> bool | str:
    """A loader's ``validate_inputs`` answer: True, or what is missing and where to put it."""
    found = host.list_models(key, folders, files)
    if name in found:
        return True
    roots = ", ".join(host.model_folders(key)) or f"models/{key}/"
    what, repo = FOLDERS[key]
    get = f", for example {repo} from Hugging Face" if repo else ""
    have = f"holds {len(found)} other entr{'y' if len(found) == 1 else 'ies'}" if found else "is empty"
    return (f"'{name}' is not in ComfyUI's models/{key} folder ({roots}), which {have}. It takes {what}{get}: put "
            "it there, then press R in the editor to refresh the lists")


def model_check(key: str, input_name: str, folders: bool = True, files: bool = True) -> classmethod:
    """A loader's ``validate_inputs``: ``check_model`` on its input ``input_name``. The host passes a node's inputs to
    it by the names its signature declares (and checks the others against their lists itself), so the signature
    declares exactly that one."""
    def validate_inputs(cls, **inputs) -> bool | str:
        return check_model(key, inputs[input_name], folders, files)

    arg = inspect.Parameter.POSITIONAL_OR_KEYWORD
    validate_inputs.__signature__ = inspect.Signature([inspect.Parameter("cls", arg), inspect.Parameter(input_name, arg)])
    return classmethod(validate_inputs)


def sana_model(name: str = "model") -> io.Input:
    return SanaModelType.Input(name, tooltip="from Sana Load Transformer or Sana Load Pipeline")


def sana_vae() -> io.Input:
    return SanaVAEType.Input("vae", tooltip="the DC-AE, from Sana Load DC-AE or Sana Load Pipeline")


def sana_text_encoder() -> io.Input:
    return SanaTextEncoderType.Input("text_encoder", tooltip="Gemma-2, from Sana Load Text Encoder or Sana Load "
                                                             "Pipeline")


def sampler(samplers) -> io.Combo.Input:
    return io.Combo.Input("sampler", options=list(samplers), default="flow_dpm_solver", tooltip=(
        "flow_dpm_solver: the reference Flow-DPM-Solver (20 steps are the default); flow_euler: first-order flow "
        "Euler (needs more steps)"))


def steps() -> io.Int.Input:
    return io.Int.Input("steps", default=20, min=1, max=1000, tooltip="sampling steps")


def flow_shift(optional: bool = False) -> io.Float.Input:
    return io.Float.Input("flow_shift", default=0.0, min=0.0, max=100.0, step=0.1, optional=optional,
                          tooltip="the flow schedule's shift; 0 = the model's default (3.0; 6.0 for 4K)")


def pag_scale(default: float) -> io.Float.Input:
    return io.Float.Input("pag_scale", default=default, min=0.0, max=100.0, step=0.1,
                          tooltip="perturbed-attention guidance; 0 = off")


def pag_adaptive_scale() -> io.Float.Input:
    return io.Float.Input("pag_adaptive_scale", default=0.0, min=0.0, max=1.0, step=0.0001, tooltip=(
        "lowers the PAG scale as sampling proceeds (scale − this × (1000 − t)); 0 = constant"))


def pag_layers() -> io.String.Input:
    return io.String.Input("pag_layers", default="8", tooltip="the transformer blocks PAG perturbs, e.g. '8' or '7,8' "
                                                              "or '6-9'")


def denoise(minimum: float) -> io.Float.Input:
    """``minimum`` 0 where 0 means 'return the input' (Sana Sample); a schedule needs more than 0 (Sana Scheduler)."""
    return io.Float.Input("denoise", default=1.0, min=minimum, max=1.0, step=0.01, tooltip=(
        "how much of the schedule runs: 1 starts from pure noise; lower keeps more of the input latent "
        "(image-to-image)"))


def strength(name: str) -> io.Float.Input:
    return io.Float.Input(name, default=1.0, min=-10.0, max=10.0, step=0.01,
                          tooltip="how strongly the LoRA applies; 0 = off, negative inverts it")
