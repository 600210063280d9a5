"""The nodes' shared input specs, each with its tooltip, and the model folders the loaders read: where each kind of
file goes, which repository to get, and the message a loader gives when its file is missing."""

from __future__ import annotations

from . import host

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


def model_input(key: str, folders: bool = True, files: bool = True):
    """A combo of the files and folders in the ``key`` model folders, with a tooltip saying what goes there."""
    return (host.list_models(key, folders, files), {"tooltip": where(key)})


def check_model(key: str, name: str, folders: bool = True, files: bool = True) -> bool | str:
    """A loader's VALIDATE_INPUTS answer: True, or what is missing and where to put it."""
    found = host.list_models(key, folders, files)
    if name in found:
        return True
    roots = ", ".join(host.model_folders(key)) or f"models/{key}/"
    what, repo = FOLDERS[key]
    get = f", for example {repo} from Hugging Face" if repo else ""
    have = f"holds {len(found)} other entr{'y' if len(found) == 1 else 'ies'}" if found else "is empty"
    return (f"'{name}' is not in ComfyUI's models/{key} folder ({roots}), which {have}. It takes {what}{get}: put "
            "it there, then press R in the editor to refresh the lists")


FLOW_SHIFT = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                        "tooltip": "the flow schedule's shift; 0 = the model's default (3.0; 6.0 for 4K)"})
PAG_SCALE_TIP = "perturbed-attention guidance; 0 = off"
PAG_ADAPTIVE_SCALE = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.0001,
                                "tooltip": "lowers the PAG scale as sampling proceeds (scale − this × (1000 − t)); "
                                           "0 = constant"})
PAG_LAYERS = ("STRING", {"default": "8", "tooltip": "the transformer blocks PAG perturbs, e.g. '8' or '7,8' or '6-9'"})
SAMPLER_TIP = ("flow_dpm_solver: the reference Flow-DPM-Solver (20 steps are the default); flow_euler: first-order "
               "flow Euler (needs more steps)")
STEPS = ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "sampling steps"})
DENOISE_TIP = ("how much of the schedule runs: 1 starts from pure noise; lower keeps more of the input latent "
               "(image-to-image)")
SANA_MODEL = ("SANA_MODEL", {"tooltip": "from Sana Load Transformer or Sana Load Pipeline"})
SANA_VAE = ("SANA_VAE", {"tooltip": "the DC-AE, from Sana Load DC-AE or Sana Load Pipeline"})
SANA_TEXT_ENCODER = ("SANA_TEXT_ENCODER", {"tooltip": "Gemma-2, from Sana Load Text Encoder or Sana Load Pipeline"})
STRENGTH = ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                      "tooltip": "how strongly the LoRA applies; 0 = off, negative inverts it"})
