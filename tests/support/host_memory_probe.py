"""Run by tests/test_host_memory.py in a child Python: ComfyUI's own modules in-process (no server), this package
imported as ComfyUI would, the tiny models loaded through the pack's nodes. It measures and prints as JSON:

- the host's layers (``operations``) against the reference layers: transformer, ControlNet, DC-AE, same weights;
- KSampler on SanaToModel's MODEL fully loaded against partly loaded, with the memory budget forced small through
  the host's loading API (``LoadedModel.model_load``): plain, with ComfyUI's own LoRA loader (its patches applied per
  call to the layers left off the device), with fp8 storage, and the SANA-Video model;
- VAEDecode through SanaToVAE fully against partly loaded.

    python tests/support/host_memory_probe.py MODELS_DIR OUT.json
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMFY = Path(sys.argv[3]) if len(sys.argv) > 3 else ROOT / ".sana-env" / "ComfyUI"
sys.path.insert(0, str(COMFY))
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.model_management as mm  # noqa: E402
import comfy.sample  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
NAME, WIDE, VIDEO = "Sana_600M_1024px_diffusers", "Sana_wide_diffusers", "SANA-Video_2B_480p_diffusers"
CONTROLNET = "Sana_600M_1024px_ControlNet_HED_diffusers"
TEXT, SEED, STEPS, SIZE = "a lighthouse on a cliff at dusk", 3, 3, 256


def package():
    spec = importlib.util.spec_from_file_location("sana_comfy", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["sana_comfy"] = module
    spec.loader.exec_module(module)
    return module


BUDGET: dict[str, float] = {}  # while set: the fraction of a model's size the host may load


def _budgeted(original):
    """``LoadedModel.model_load`` with the memory budget forced to a fraction of the model (on the CPU the host
    always loads whole), for the pack's models built from the host's layers."""
    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        inner = getattr(self.model.model, "inner", None)
        if BUDGET and getattr(inner, "operations", None) is not None and inner.operations.__module__.endswith(
                "comfy_layers"):
            lowvram_model_memory = int(self.model.model_size() * BUDGET["fraction"])
        return original(self, lowvram_model_memory, force_patch_weights)
    return model_load


def cast_layers(patcher) -> int:
    """How many of the model's layers the host left to cast per call."""
    return sum(1 for m in patcher.model.modules() if getattr(m, "comfy_cast_weights", False) is True
               and "comfy_cast_weights" in m.__dict__)


def ksample(model, pos, neg, latent, partly: bool):
    mm.unload_all_models()
    if partly:
        BUDGET["fraction"] = 0.3
    try:
        noise = comfy.sample.prepare_noise(latent, SEED)
        out = comfy.sample.sample(model, noise, STEPS, 4.5, "euler", "simple", pos, neg, latent, denoise=1.0,
                                  seed=SEED)
        return out, cast_layers(model), bool(model.model.model_lowvram)
    finally:
        BUDGET.clear()


def main(models: Path, out_path: Path) -> None:
    for key in ("diffusers", "diffusion_models", "text_encoders", "vae", "loras", "controlnet"):
        folder_paths.add_model_folder_path(key, str(models / key), is_default=True)
    mm.LoadedModel.model_load = _budgeted(mm.LoadedModel.model_load)
    pack = package()
    pack.nodes.host.extend_host()
    N = pack.nodes.NODES
    from sana_comfy.nodes.host import comfy_layers
    from sana_comfy.sana_core.load import controlnet, dcae, transformer
    report: dict = {}  # (on the CPU the fused blocks run in fp32: a fully loaded fp32 model takes them)

    # 1. the host's layers against the reference, same weights
    g = torch.Generator().manual_seed(0)
    ref = transformer.load_transformer(models / "diffusion_models" / NAME, "fp32")
    host = transformer.load_transformer(models / "diffusion_models" / NAME, "fp32", operations=comfy_layers.Operations)
    x = torch.randn(2, 32, 8, 8, generator=g)
    t = torch.tensor([999.0, 500.0])
    ctx = torch.randn(2, 12, ref.cfg.caption_channels, generator=g)
    mask = torch.ones(2, 12)
    with torch.no_grad():
        report["ops_transformer"] = (ref(x, t, ctx, mask) - host(x, t, ctx, mask)).abs().max().item()
        report["ops_types"] = sorted({type(m).__qualname__ for m in host.modules()
                                      if type(m).__module__.endswith("comfy_layers")})
        cn_ref = controlnet.load_controlnet(models / "controlnet" / CONTROLNET, "fp32")
        cn_host = controlnet.load_controlnet(models / "controlnet" / CONTROLNET, "fp32",
                                             operations=comfy_layers.Operations)
        hint = torch.randn(2, 32, 8, 8, generator=g)
        report["ops_controlnet"] = max((a - b).abs().max().item()
                                       for a, b in zip(cn_ref(x, t, ctx, hint, mask), cn_host(x, t, ctx, hint, mask)))
        vae_dir = models / "vae" / "dc-ae-f32c32-sana-1.1-diffusers"
        v_ref, v_host = dcae.load_dcae(vae_dir, torch.float32), dcae.load_dcae(vae_dir, torch.float32,
                                                                             operations=comfy_layers.Operations)
        z = torch.randn(1, 32, 4, 4, generator=g)
        report["ops_dcae_decode"] = (v_ref.decode(z) - v_host.decode(z)).abs().max().item()
        img = torch.rand(1, 3, 128, 128, generator=g) * 2 - 1
        report["ops_dcae_encode"] = (v_ref.encode(img) - v_host.encode(img)).abs().max().item()

    # 2. KSampler on SanaToModel's MODEL, fully and partly loaded
    sana, te, vae, _ = N["SanaLoadPipeline"].execute(NAME, "fp32").result
    pos = N["SanaEncodePrompt"].execute(te, TEXT, True, 300)[0]
    neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
    latent = N["SanaEmptyLatent"].execute(SIZE, SIZE, 1, False)[0]["samples"]
    model = N["SanaToModel"].execute(sana)[0]
    full, n_full, _ = ksample(model, pos, neg, latent, False)
    part, n_part, lowvram = ksample(model, pos, neg, latent, True)
    report["partial"] = {"diff": (full - part).abs().max().item(), "scale": full.abs().max().item(),
                         "cast_full": n_full, "cast_partial": n_part, "lowvram": lowvram}

    import nodes as comfy_nodes  # ComfyUI's own nodes

    lora_name = "sana_lora_style.safetensors"
    (with_lora,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, lora_name, 1.0)
    lfull, _, _ = ksample(with_lora, pos, neg, latent, False)
    lpart, n_lpart, lowvram = ksample(with_lora, pos, neg, latent, True)
    report["partial_lora"] = {"diff": (lfull - lpart).abs().max().item(), "lora_effect": (lfull - full).abs().max()
                              .item(), "cast_partial": n_lpart, "lowvram": lowvram}

    wide = N["SanaLoadTransformer"].execute(WIDE, "fp8_e4m3fn").result[0]
    wmodel = N["SanaToModel"].execute(wide)[0]
    (wlora,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(wmodel, "wide_peft.safetensors", 1.0)
    for name, m in (("partial_fp8", wmodel), ("partial_fp8_lora", wlora)):
        a, _, _ = ksample(m, pos, neg, latent, False)
        b, n, lowvram = ksample(m, pos, neg, latent, True)
        report[name] = {"diff": (a - b).abs().max().item(), "scale": a.abs().max().item(), "cast_partial": n,
                        "lowvram": lowvram, "quant_cast": sum(1 for q in m.model.modules() if isinstance(
                            q, comfy_layers._Quant) and "comfy_cast_weights" in q.__dict__ and q.comfy_cast_weights)}
        report[name + "_latent"] = a.flatten()[:4].tolist()
    report["fp8_lora_effect"] = (ksample(wlora, pos, neg, latent, False)[0]
                                 - ksample(wmodel, pos, neg, latent, False)[0]).abs().max().item()

    # the SANA-Video model (host layers too), fully and partly loaded
    video, vte, _, _ = N["SanaLoadPipeline"].execute(VIDEO, "fp32").result
    vpos = N["SanaEncodePrompt"].execute(vte, TEXT, True, 300, "", False, "video", 30)[0]
    vneg = N["SanaEncodePrompt"].execute(vte, "", False, 300)[0]
    vlatent = N["SanaEmptyVideoLatent"].execute(96, 64, 9, 1, False)[0]["samples"]
    vmodel = N["SanaToModel"].execute(video)[0]
    a, _, _ = ksample(vmodel, vpos, vneg, vlatent, False)
    b, n, lowvram = ksample(vmodel, vpos, vneg, vlatent, True)
    report["partial_video"] = {"diff": (a - b).abs().max().item(), "scale": a.abs().max().item(), "cast_partial": n,
                               "lowvram": lowvram}

    # 3. VAEDecode through SanaToVAE, fully and partly loaded
    (vae_native,) = N["SanaToVAE"].execute(vae)
    mm.unload_all_models()
    img_full = comfy_nodes.VAEDecode().decode(vae_native, {"samples": full})[0]
    mm.unload_all_models()
    BUDGET["fraction"] = 0.3
    img_part = comfy_nodes.VAEDecode().decode(vae_native, {"samples": full})[0]
    report["partial_vae"] = {"diff": (img_full - img_part).abs().max().item(), "cast_partial": cast_layers(
        vae_native.patcher), "lowvram": bool(vae_native.patcher.model.model_lowvram)}
    BUDGET.clear()
    out_path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
