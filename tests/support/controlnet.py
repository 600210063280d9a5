"""Tiny random Sana ControlNets (docs/sana-spec.md §7.2 "ControlNet", §8 "ControlNet"), saved in the published
layouts, with the diffusers references on the same weights. Nothing here imports ComfyUI.

``tiny_controlnet`` builds a diffusers ``SanaControlNetModel`` matching a diffusers ``SanaTransformer2DModel``, with
every weight random (``input_block`` and ``controlnet_blocks`` too, which diffusers zero-initialises, so the control
changes the image). ``save_controlnet`` writes it as a diffusers folder, a single diffusers-keyed safetensors file and
an NVlabs ``.pth``. ``diffusers_controlnet_image`` is ``SanaControlNetPipeline``'s image; ``diffusers_controlnet_loop``
re-runs that pipeline's loop step by step with the ControlNet switched on only where a predicate says (the reference
for a ControlNet applied over a sigma range). ``foreign_controlnet`` gives other families' ControlNet key layouts.

How the pipeline (diffusers 0.42, ``pipeline_sana_controlnet.py``) treats the control image:
- A ``torch.Tensor`` goes through ``prepare_image`` untouched: no resize and no normalisation, so it must already be
  (B, 3, H, W) in [-1, 1] at the output size. PIL / numpy go through ``PixArtImageProcessor.preprocess`` (resize to
  height × width with lanczos, then ·2 − 1). The references here pass the tensor, (image · 2 − 1) channels-first.
- It is repeated to the prompt batch, doubled for CFG ([uncond, cond], both the same image), VAE-encoded in the VAE
  dtype (``.latent``, deterministic, no generator draw) and multiplied by the VAE ``scaling_factor``. height and width
  are then taken from the image.
- The ControlNet gets the same latents, text and timestep as the transformer: the raw scheduler timestep, never
  multiplied by ``timestep_scale`` (SanaPipeline multiplies; the tiny repo's scale is 1.0, so both agree there). For
  the flow DPM-Solver that timestep is int64, σ · 1000 truncated (σ 0.99967 → 999, 0.89964 → 899).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from .models import diffusers_to_original, perturb

LAYOUTS = ("folder", "single", "nvlabs")
FOREIGN_KINDS = ("sd15", "sdxl", "flux")

# The diffusers reference call (as REFERENCE_CALL in lora.py, minus height/width: the control image sets them);
# every entry can be overridden. CHI, max_sequence_length 300 and clean_caption False are the pipeline defaults.
REFERENCE_CALL = dict(prompt="a small red house by a lake, watercolor", negative_prompt="", seed=0,
                      num_inference_steps=3, guidance_scale=4.5, use_resolution_binning=False)

# Real NVlabs ControlNet files are a whole ``SanaMSControlNet``: the base model (embedders, ``blocks.N``,
# ``final_layer``, ``pos_embed``, ``y_embedder.y_embedding``) plus ``controlnet.K``. Only the embedders and
# ``controlnet.*`` make the ControlNet (convert_sana_controlnet_to_diffusers.py); the rest must be ignored.
# ``y_embedder.y_embedding`` is the training null caption, this many tokens long.
NULL_CAPTION_TOKENS = 300


# --- the model ---------------------------------------------------------------------------------------------------


def _shared_config(transformer) -> dict:
    """The transformer's config entries that ``SanaControlNetModel`` also takes (all but num_layers)."""
    from diffusers import SanaControlNetModel

    names = set(inspect.signature(SanaControlNetModel.__init__).parameters) - {"self", "num_layers"}
    return {k: v for k, v in transformer.config.items() if k in names}


def tiny_controlnet(transformer, num_layers: int = 2, seed: int = 0, std: float = 0.05):
    """A random diffusers ``SanaControlNetModel`` with the dims of the diffusers ``SanaTransformer2DModel``
    ``transformer`` (only its config is read) and ``num_layers`` blocks; fp32, eval mode.

    Every parameter gets N(0, std²) noise on top of the diffusers init, so the zero-initialised ``input_block`` and
    ``controlnet_blocks`` are non-zero and the control changes the image. Sample k is added after main block k+1
    (§1.3.5), so diffusers uses at most transformer.num_layers − 1 of them (it ignores the rest silently).
    """
    from diffusers import SanaControlNetModel

    torch.manual_seed(seed)
    model = perturb(SanaControlNetModel(**_shared_config(transformer), num_layers=num_layers), seed, std)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "build under the fp32 default dtype"
    assert model.input_block.weight.abs().sum() > 0 and all(b.weight.abs().sum() > 0 for b in model.controlnet_blocks)
    return model.eval().requires_grad_(False)


# --- the published layouts ---------------------------------------------------------------------------------------


def _main_model_keys(controlnet, transformer) -> dict[str, torch.Tensor]:
    """The base-model keys an NVlabs ControlNet file also carries, in NVlabs names: ``blocks.N.*`` (more blocks than
    the ControlNet has), ``final_layer.*``, ``pos_embed`` and ``y_embedder.y_embedding``.

    From ``transformer`` when given; else made up: perturbed copies of the ControlNet's blocks (one more than it has,
    so they differ from ``controlnet.K.copied_block``) and a random final layer.
    """
    cfg = controlnet.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    g = torch.Generator().manual_seed(1234)
    if transformer is not None:
        orig = diffusers_to_original({k: v.detach() for k, v in transformer.state_dict().items()})
        out = {k: v for k, v in orig.items() if k.startswith(("blocks.", "final_layer."))}
    else:
        blocks = copy.deepcopy(controlnet.transformer_blocks)
        blocks.append(copy.deepcopy(blocks[0]))
        perturb(blocks, seed=1234, std=0.05)
        out = diffusers_to_original({f"transformer_blocks.{k}": v for k, v in blocks.state_dict().items()})
        out["final_layer.linear.weight"] = torch.randn(cfg.patch_size ** 2 * cfg.out_channels, dim, generator=g) * 0.05
        out["final_layer.linear.bias"] = torch.randn(cfg.patch_size ** 2 * cfg.out_channels, generator=g) * 0.05
        out["final_layer.scale_shift_table"] = torch.randn(2, dim, generator=g) / dim ** 0.5
    out["pos_embed"] = torch.zeros(1, cfg.sample_size ** 2, dim)  # a (sincos or unused) buffer in the real files
    out["y_embedder.y_embedding"] = torch.randn(NULL_CAPTION_TOKENS, cfg.caption_channels, generator=g) * 0.05
    return out


def nvlabs_state_dict(controlnet, transformer=None) -> dict[str, torch.Tensor]:
    """The ControlNet's weights in NVlabs names (the inverse of §7.2 "ControlNet"), plus the base-model keys of
    ``_main_model_keys``, which a loader must ignore:

    - embedders as the transformer's: ``x_embedder.proj.*``, ``t_embedder.mlp.{0,2}.*``, ``t_block.1.*``,
      ``y_embedder.y_proj.fc{1,2}.*``, ``attention_y_norm.weight``
    - ``input_block.*`` → ``controlnet.0.before_proj.*``
    - ``transformer_blocks.K.*`` → ``controlnet.K.copied_block.*`` in NVlabs block names (fused ``attn.qkv``,
      ``cross_attn.q_linear`` / ``kv_linear``, ``mlp.*_conv.conv``)
    - ``controlnet_blocks.K.*`` → ``controlnet.K.after_proj.*``
    """
    sd = {k: v.detach() for k, v in controlnet.state_dict().items()}
    blocks = {k: v for k, v in sd.items() if k.startswith("transformer_blocks.")}
    top = {k: v for k, v in sd.items() if not k.startswith(("transformer_blocks.", "controlnet_blocks.",
                                                                "input_block."))}
    out = _main_model_keys(controlnet, transformer)
    out.update(diffusers_to_original(top))
    for k, v in diffusers_to_original(blocks).items():
        m = re.match(r"blocks\.(\d+)\.(.+)", k)
        assert m, f"unexpected block key {k}"
        out[f"controlnet.{m.group(1)}.copied_block.{m.group(2)}"] = v
    for k, v in sd.items():
        if k.startswith("input_block."):
            out["controlnet.0.before_proj." + k[len("input_block."):]] = v
        m = re.match(r"controlnet_blocks\.(\d+)\.(.+)", k)
        if m:
            out[f"controlnet.{m.group(1)}.after_proj.{m.group(2)}"] = v
    return out


def save_controlnet(controlnet, root: Path, transformer=None) -> dict[str, Path]:
    """Write ``controlnet`` in the three published layouts under ``root``; all hold the same weights.

    "folder": ``controlnet.save_pretrained`` (config.json + diffusion_pytorch_model.safetensors); "single":
    sana_controlnet.safetensors with the diffusers keys and no config; "nvlabs": sana_controlnet.pth,
    ``torch.save({"state_dict": nvlabs_state_dict(...)})`` (tensors only, readable with ``weights_only=True``).
    ``transformer`` (optional) supplies the base-model keys of the .pth; without it they are made up.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    controlnet.save_pretrained(root / "folder")
    save_file({k: v.detach().contiguous() for k, v in controlnet.state_dict().items()},
              root / "sana_controlnet.safetensors")
    sd = {k: v.contiguous().clone() for k, v in nvlabs_state_dict(controlnet, transformer).items()}
    torch.save({"state_dict": sd}, root / "sana_controlnet.pth")
    return {"folder": root / "folder", "single": root / "sana_controlnet.safetensors",
            "nvlabs": root / "sana_controlnet.pth"}


# --- diffusers references ----------------------------------------------------------------------------------------


def _pipeline(repo: Path, controlnet_folder: Path):
    """``SanaControlNetPipeline`` from the repo's components and the ControlNet folder, fp32 on CPU."""
    import diffusers

    base = diffusers.SanaPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    controlnet = diffusers.SanaControlNetModel.from_pretrained(controlnet_folder, torch_dtype=torch.float32)
    pipe = diffusers.SanaControlNetPipeline(**base.components, controlnet=controlnet.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _control_tensor(control_image: torch.Tensor) -> torch.Tensor:
    """(1, H, W, 3) in [0, 1] → (1, 3, H, W) in [-1, 1]: what ``preprocess`` would make of it, which the pipeline
    takes as is (a tensor skips resize and normalisation)."""
    assert control_image.ndim == 4 and control_image.shape[-1] == 3, (
        f"control image must be (B, H, W, 3), got {tuple(control_image.shape)}")
    assert control_image.min() >= 0 and control_image.max() <= 1, "control image must be in [0, 1]"
    return control_image.permute(0, 3, 1, 2).to(torch.float32) * 2 - 1


def _size(control_image: torch.Tensor, kw: dict) -> tuple[int, int]:
    h, w = control_image.shape[1:3]
    assert (kw.pop("height", h), kw.pop("width", w)) == (h, w), "height/width come from the control image"
    assert h % 32 == 0 and w % 32 == 0, f"control image {h}x{w}: both sides must be multiples of 32"
    return h, w


def diffusers_controlnet_image(repo: Path, controlnet_folder: Path, control_image: torch.Tensor, scale: float,
                               **call) -> torch.Tensor:
    """diffusers' ``SanaControlNetPipeline`` image: (B, H, W, 3) float in [0, 1].

    fp32 on CPU; ``control_image`` (1, H, W, 3) in [0, 1] sets the output size; ``controlnet_conditioning_scale=
    scale``; ``REFERENCE_CALL`` overridden by ``call`` (``seed`` seeds a CPU generator).
    """
    import numpy as np

    pipe = _pipeline(repo, controlnet_folder)
    kw = {**REFERENCE_CALL, **call}
    height, width = _size(control_image, kw)
    generator = torch.Generator("cpu").manual_seed(kw.pop("seed"))
    out = pipe(control_image=_control_tensor(control_image), controlnet_conditioning_scale=scale, height=height,
               width=width, generator=generator, output_type="np", **kw)
    return torch.from_numpy(np.asarray(out.images))


def diffusers_controlnet_loop(repo: Path, controlnet_folder: Path, control_image: torch.Tensor, scale: float,
                              active: Callable[[int, float], bool], **call) -> torch.Tensor:
    """``SanaControlNetPipeline.__call__`` re-run step by step with diffusers' components: (B, H, W, 3) in [0, 1].

    At step i, with s = the scheduler's sigma for that step (``scheduler.sigmas[i]``; the int64 timestep the models
    get is ⌊s · 1000⌋), the ControlNet samples go to the transformer only when ``active(i, s)``; otherwise the
    ControlNet does not run and the transformer gets no ``controlnet_block_samples``. Always True gives the
    pipeline's image bit for bit; always False gives SanaPipeline's. Supported ``call`` keys: those of
    ``REFERENCE_CALL`` (``use_resolution_binning`` must be False), ``complex_human_instruction``,
    ``max_sequence_length``, height/width (must equal the image's).
    """
    import diffusers
    from diffusers.utils.torch_utils import randn_tensor

    pipe = _pipeline(repo, controlnet_folder)
    kw = {**REFERENCE_CALL, **call}
    height, width = _size(control_image, kw)
    defaults = inspect.signature(diffusers.SanaControlNetPipeline.__call__).parameters
    chi = kw.pop("complex_human_instruction", defaults["complex_human_instruction"].default)
    max_len = kw.pop("max_sequence_length", defaults["max_sequence_length"].default)
    generator = torch.Generator("cpu").manual_seed(kw.pop("seed"))
    prompt, negative = kw.pop("prompt"), kw.pop("negative_prompt")
    steps, cfg = kw.pop("num_inference_steps"), kw.pop("guidance_scale")
    assert not kw.pop("use_resolution_binning"), "the loop does not bin"
    assert not kw, f"unsupported call arguments {sorted(kw)}"
    do_cfg = cfg > 1.0
    batch = 1 if isinstance(prompt, str) else len(prompt)
    device = torch.device("cpu")
    vae, transformer, controlnet, scheduler = pipe.vae, pipe.transformer, pipe.controlnet, pipe.scheduler

    with torch.no_grad():
        emb, mask, neg_emb, neg_mask = pipe.encode_prompt(
            prompt, do_cfg, negative_prompt=negative, num_images_per_prompt=1, device=device, clean_caption=False,
            max_sequence_length=max_len, complex_human_instruction=chi)
        if do_cfg:
            emb, mask = torch.cat([neg_emb, emb]), torch.cat([neg_mask, mask])  # [uncond, cond]

        # as prepare_image: repeated to the batch, doubled for CFG, then VAE-encoded as one batch
        image = _control_tensor(control_image)
        image = image.repeat_interleave(batch if image.shape[0] == 1 else 1, dim=0).to(device, vae.dtype)
        if do_cfg:
            image = torch.cat([image] * 2)
        control = vae.encode(image).latent * vae.config.scaling_factor  # (B·(1+cfg), 32, H/32, W/32)

        scheduler.set_timesteps(steps, device=device)
        timesteps, sigmas = scheduler.timesteps, scheduler.sigmas
        latents = randn_tensor((batch, transformer.config.in_channels, height // pipe.vae_scale_factor,
                                width // pipe.vae_scale_factor), generator=generator, device=device,
                               dtype=torch.float32)
        step_kwargs = pipe.prepare_extra_step_kwargs(generator, 0.0)

        for i, t in enumerate(timesteps):
            x = torch.cat([latents] * 2) if do_cfg else latents
            timestep = t.expand(x.shape[0])  # the raw scheduler timestep, as the ControlNet pipeline passes it
            samples = None
            if active(i, float(sigmas[i])):
                samples = controlnet(x.to(controlnet.dtype), encoder_hidden_states=emb.to(controlnet.dtype),
                                     encoder_attention_mask=mask, timestep=timestep, controlnet_cond=control,
                                     conditioning_scale=scale, return_dict=False)[0]
                samples = tuple(s.to(transformer.dtype) for s in samples)
            pred = transformer(x.to(transformer.dtype), encoder_hidden_states=emb.to(transformer.dtype),
                               encoder_attention_mask=mask, timestep=timestep, controlnet_block_samples=samples,
                               return_dict=False)[0].float()
            if do_cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + cfg * (cond - uncond)
            if transformer.config.out_channels // 2 == transformer.config.in_channels:
                pred = pred.chunk(2, dim=1)[0]
            latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]

        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return torch.from_numpy(pipe.image_processor.postprocess(decoded, output_type="np"))


# --- other families ----------------------------------------------------------------------------------------------

# Flux ControlNets are 3072 wide; at full width these few tensors would be ~200 MB, so the hidden width is cut to
# this (input widths stay real: 64 packed latent channels, 256 timestep channels, 4096 T5 channels).
FLUX_TINY_WIDTH = 128


def foreign_controlnet(kind: str) -> dict[str, torch.Tensor]:
    """A small random ControlNet state dict (fp16) under the real key names of another family, none a Sana key.

    "sd15" / "sdxl": the ldm ControlNet layout of lllyasviel's / the ComfyUI-repackaged files (``input_hint_block``,
    ``zero_convs``, ``middle_block_out``, ``input_blocks``; SDXL adds ``label_emb``), real shapes. "flux": the
    diffusers ``FluxControlNetModel`` layout (``controlnet_x_embedder``, ``transformer_blocks`` with ``add_q_proj``,
    ``single_transformer_blocks``, ``controlnet_blocks``, ``controlnet_single_blocks``), hidden width
    ``FLUX_TINY_WIDTH``.
    """
    assert kind in FOREIGN_KINDS, f"unknown family {kind!r}; expected one of {FOREIGN_KINDS}"
    g = torch.Generator().manual_seed(100 + FOREIGN_KINDS.index(kind))
    shapes: dict[str, tuple[int, ...]] = {}
    if kind in ("sd15", "sdxl"):
        context = 768 if kind == "sd15" else 2048
        shapes = {"time_embed.0.weight": (1280, 320), "time_embed.0.bias": (1280,),
                  "input_hint_block.0.weight": (16, 3, 3, 3), "input_hint_block.0.bias": (16,),
                  "input_hint_block.14.weight": (320, 256, 3, 3), "input_hint_block.14.bias": (320,),
                  "input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.0.0.bias": (320,),
                  "input_blocks.1.0.in_layers.0.weight": (320,), "input_blocks.1.0.in_layers.0.bias": (320,),
                  "input_blocks.1.0.in_layers.2.weight": (320, 320, 3, 3),
                  "zero_convs.0.0.weight": (320, 320, 1, 1), "zero_convs.0.0.bias": (320,),
                  "middle_block_out.0.weight": (1280, 1280, 1, 1), "middle_block_out.0.bias": (1280,)}
        if kind == "sd15":
            shapes["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = (320, context)
        else:  # SDXL: no attention at the first level; size/crop conditioning in label_emb
            shapes["input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"] = (640, context)
            shapes["label_emb.0.0.weight"] = (1280, 2816)
            shapes["label_emb.0.0.bias"] = (1280,)
    else:
        d = FLUX_TINY_WIDTH
        shapes = {"controlnet_x_embedder.weight": (d, 64), "controlnet_x_embedder.bias": (d,),
                  "x_embedder.weight": (d, 64), "context_embedder.weight": (d, 4096),
                  "time_text_embed.timestep_embedder.linear_1.weight": (d, 256),
                  "time_text_embed.timestep_embedder.linear_1.bias": (d,),
                  "transformer_blocks.0.attn.to_q.weight": (d, d),
                  "transformer_blocks.0.attn.add_q_proj.weight": (d, d),
                  "single_transformer_blocks.0.attn.to_q.weight": (d, d),
                  "controlnet_blocks.0.weight": (d, d), "controlnet_blocks.0.bias": (d,),
                  "controlnet_single_blocks.0.weight": (d, d), "controlnet_single_blocks.0.bias": (d,)}
    return {k: (torch.randn(s, generator=g) * 0.02).to(torch.float16) for k, s in shapes.items()}
