"""The pack's ComfyUI-side classes (``nodes/host/comfy_layers.py``, ``nodes/host/comfy_classes.py``) under the host of
the project environment (ComfyUI 0.3.75, its modules in-process on the CPU) and under what newer ComfyUI does
differently, emulated here over the same modules:

- ``LowVramPatch.__call__`` no longer calls a layer's ``convert_func`` / ``set_func``; ``patch_weight_to_device``
  casts to its LoRA compute dtype first (or not at all, ``force_cast`` with no patch) and passes ``return_weight``;
- the dynamic-VRAM patcher leaves each layer casting per call with its LoRA in ``weight_lowvram_function``;
- ``VAE.__init__`` sets more attributes (``crop_input``, ``pad_channel_value``, ``handles_tiling``, …) that its
  helpers read; ``LatentFormat`` declares ``spacial_downscale_ratio``, which ``fix_empty_latent_channels`` compares
  with an empty latent's ``downscale_ratio_spacial`` tag;
- models are wrapped in ``CoreModelPatcher``, whose constructor takes other arguments;
- with ``comfy_aimdo`` active, the host's Linear creates no weight in ``__init__`` (filled when a state dict loads).

Each emulation copies the newer host's logic for that one behaviour; everything else is the real 0.3.75."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from support.comfy_server import comfy_dir
from support.lora import peft_lora
from support.models import perturb
from support.pipeline import TINY_DCAE32, TINY_TRANSFORMER, wide_transformer

COMFY = comfy_dir()
pytestmark = [pytest.mark.unit, pytest.mark.skipif(not (COMFY / "main.py").exists(),
                                                   reason="ComfyUI not installed: run scripts/setup_env.sh")]
if (COMFY / "main.py").exists() and str(COMFY) not in sys.path:
    sys.path.append(str(COMFY))
    from comfy.cli_args import args

    args.cpu = True

CPU = torch.device("cpu")
ROOT_KEY = "diffusion_model.net."  # where the transformer's state dict sits in its patcher's model
STORAGES = ("int8", "fp8_e4m3fn")

# Every attribute the newer host's ``VAE.__init__`` sets on every VAE (its shared defaults and what follows the
# per-model branches), which its helpers and nodes read.
VAE_INIT_ATTRIBUTES = (
    "memory_used_encode", "memory_used_decode", "downscale_ratio", "upscale_ratio", "latent_channels", "latent_dim",
    "output_channels", "pad_channel_value", "process_input", "process_output", "working_dtypes", "disable_offload",
    "not_video", "size", "downscale_index_formula", "upscale_index_formula", "extra_1d_channel", "crop_input",
    "handles_tiling", "format_encoded", "audio_sample_rate", "first_stage_model", "device", "vae_dtype",
    "output_device", "patcher",
)


@pytest.fixture(scope="module")
def host():
    """ComfyUI's modules and the pack's ComfyUI-side ones, imported in-process."""
    import comfy.lora
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.sample
    import comfy.sd
    import comfy.utils
    from sana_comfy.nodes.host import comfy_classes, comfy_layers
    from sana_comfy.sana_core.load import dcae, transformer

    return SimpleNamespace(lora=comfy.lora, mm=comfy.model_management, mp=comfy.model_patcher, ops=comfy.ops,
                           sample=comfy.sample, sd=comfy.sd, utils=comfy.utils, classes=comfy_classes,
                           layers=comfy_layers, dcae=dcae, transformer=transformer)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A Sana transformer wide enough (layers ≥ 4096 weights) for 8-bit storage to take its layers, saved by
    diffusers, a PEFT LoRA of it, and a tiny DC-AE."""
    import diffusers

    net = wide_transformer()
    base = tmp_path_factory.mktemp("compat")
    net.save_pretrained(base / "Sana_wide_diffusers")
    perturb(diffusers.AutoencoderDC(**TINY_DCAE32).eval(), 1, std=0.05).save_pretrained(base / "dcae")
    return SimpleNamespace(path=base / "Sana_wide_diffusers", dcae=base / "dcae",
                           lora=peft_lora(net, rank=4, seed=8, std=0.5),
                           caption_channels=TINY_TRANSFORMER["caption_channels"])


def _layer(model, key: str):
    """The layer holding parameter ``key`` of a patcher's model."""
    import comfy.utils

    return comfy.utils.get_attr(model.model, key.rsplit(".", 1)[0])


def _patcher(host, net):
    """A patcher around the transformer as a native MODEL, built as the pack builds it."""
    size = sum(p.numel() * p.element_size() for p in net.parameters())
    return host.classes.new_patcher(host.classes.SanaBaseModel(net, CPU), CPU, CPU, size)


def _with_lora(host, patcher, sd):
    """A clone with the PEFT LoRA as the host's own weight patches (``comfy.lora.load_lora``)."""
    suffix = ".lora_A.weight"
    key_map = {k[:-len(suffix)]: ROOT_KEY + k[len("transformer."):-len(suffix)] + ".weight" for k in sd
               if k.endswith(suffix)}
    m = patcher.clone()
    assert len(m.add_patches(host.lora.load_lora(sd, key_map, log_missing=False), 1.0)) == len(key_map)
    return m


def _load_8bit(host, wide, storage):
    """The transformer in 8-bit ``storage`` computing in bf16 (on the CPU: the reference forms, fully or partly
    loaded alike)."""
    return host.transformer.load_transformer(wide.path, "bf16", storage=storage, operations=host.layers.Operations)


def _conds(wide):
    g = torch.Generator().manual_seed(0)
    return ([[torch.randn(1, 12, wide.caption_channels, generator=g), {}]],
            [[torch.randn(1, 12, wide.caption_channels, generator=g), {}]])


def _ksample(host, model, conds, monkeypatch, fraction=None):
    """KSampler's call on ``model`` (2 Euler steps, CFG 4.5), the host loading it whole, or with ``fraction`` of its
    size as the memory budget (on the CPU the host always loads whole; its loading API is given the budget)."""
    mm = host.mm
    original = mm.LoadedModel.model_load

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        budget = int(self.model.model_size() * fraction) if fraction else lowvram_model_memory
        return original(self, budget, force_patch_weights)

    mm.unload_all_models()
    monkeypatch.setattr(mm.LoadedModel, "model_load", model_load)
    try:
        latent = torch.zeros(1, 32, 8, 8)
        noise = host.sample.prepare_noise(latent, 3)
        out = host.sample.sample(model, noise, 2, 4.5, "euler", "simple", *conds, latent, denoise=1.0, seed=3)
        cast_8bit = sum(1 for m in model.model.modules() if isinstance(m, host.layers._Quant)
                        and m.__dict__.get("comfy_cast_weights") is True)
        return out, bool(model.model.model_lowvram), cast_8bit
    finally:
        mm.unload_all_models()
        monkeypatch.setattr(mm.LoadedModel, "model_load", original)


def _lowvram_patch_without_conversion(host):
    """The newer host's ``LowVramPatch.__call__``: the patches' deltas added to the weight it is given, in that
    weight's dtype; the layer's ``convert_func`` / ``set_func`` are kept but not called."""
    def __call__(self, weight):
        return host.lora.calculate_weight(self.patches[self.key], weight, self.key, intermediate_dtype=weight.dtype)
    return __call__


@pytest.mark.parametrize("storage", STORAGES)
def test_8bit_lora_per_call_without_the_patchers_conversion(host, wide, monkeypatch, storage):
    """A partly loaded 8-bit model with a LoRA, its per-call patches not converting the 8-bit weight (newer
    ComfyUI), gives the fully loaded latent: the layer dequantizes before the patch adds its deltas."""
    model = _with_lora(host, _patcher(host, _load_8bit(host, wide, storage)), wide.lora)
    conds = _conds(wide)
    full, _, _ = _ksample(host, model, conds, monkeypatch)
    plain, _, _ = _ksample(host, _patcher(host, _load_8bit(host, wide, storage)), conds, monkeypatch)
    monkeypatch.setattr(host.mp.LowVramPatch, "__call__", _lowvram_patch_without_conversion(host))
    part, lowvram, cast_8bit = _ksample(host, model, conds, monkeypatch, fraction=0.3)
    assert lowvram and cast_8bit > 0
    assert (full - plain).abs().max() > 1e-3  # the LoRA acts
    assert (full - part).abs().max() <= 1e-5 * max(1.0, full.abs().max().item())


def _patch_weight_to_device(host, patcher, key, compute_dtype, return_weight=False, force_cast=False):
    """The newer host's ``ModelPatcher.patch_weight_to_device`` for a layer with ``convert_weight`` /
    ``set_weight``: the stored weight cast to the LoRA compute dtype when there are patches (else left as stored),
    converted, patched, then handed to ``set_weight`` with ``return_weight``."""
    weight, set_func, convert_func = host.mp.get_key_weight(patcher.model, key)
    if key not in patcher.patches and not force_cast:
        return weight
    temp = weight.to(compute_dtype if key in patcher.patches else None, copy=True)
    temp = convert_func(temp, inplace=True)
    out = host.lora.calculate_weight(patcher.patches[key], temp, key) if key in patcher.patches else temp
    return set_func(out, inplace_update=False, seed=0, return_weight=return_weight)


@pytest.mark.parametrize("storage", STORAGES)
def test_8bit_hooks_take_the_newer_patchers_casts(host, wide, storage):
    """``convert_weight`` / ``set_weight`` as the newer patcher calls them: a forced cast hands over the 8-bit values
    themselves (the dynamic-VRAM patcher's small layers), a LoRA comes in its compute dtype (fp16 here), and
    ``return_weight`` asks for the weight only."""
    model = _with_lora(host, _patcher(host, _load_8bit(host, wide, storage)), wide.lora)
    quant = [k for k in model.model.state_dict() if k.endswith(".weight")
             and isinstance(_layer(model, k), host.layers._Quant)]
    unpatched = next(k for k in quant if k not in model.patches)
    cast = _patch_weight_to_device(host, model, unpatched, torch.float16, return_weight=True, force_cast=True)
    assert cast.dtype == torch.bfloat16 and torch.equal(cast, _layer(model, unpatched).dequantize())

    key = next(k for k in quant if k in model.patches)
    layer = _layer(model, key)
    plain = layer.dequantize().clone()
    merged = host.lora.calculate_weight(model.patches[key], plain.clone(), key)  # in fp32
    returned = _patch_weight_to_device(host, model, key, torch.float16, return_weight=True)
    assert returned.dtype == torch.bfloat16 and layer.dequantize().equal(plain)  # returned, not kept
    assert (returned - merged).abs().max() <= 1e-2 * merged.abs().max()  # fp16 arithmetic
    _patch_weight_to_device(host, model, key, torch.float16)
    assert layer.dequantize().equal(returned)  # kept by set_weight until the weight is restored


@pytest.mark.parametrize("storage", STORAGES)
def test_8bit_lora_from_the_dynamic_vram_patcher(host, wide, storage):
    """A dynamic-VRAM patcher leaves every layer casting per call, with its LoRA as ``weight_lowvram_function`` (a
    ``LowVramPatch`` without the layer's hooks) and nothing in ``weight_function``: the 8-bit layers apply it."""
    net = _load_8bit(host, wide, storage)
    model = _with_lora(host, _patcher(host, net), wide.lora)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 32, 8, 8, generator=g, dtype=torch.bfloat16), torch.tensor([999.0, 500.0])
    ctx = torch.randn(2, 12, wide.caption_channels, generator=g, dtype=torch.bfloat16)
    mask = torch.ones(2, 12)
    host.mm.load_models_gpu([model], force_full_load=True)
    with torch.no_grad():
        merged = net(x, t, ctx, mask)
    host.mm.unload_all_models()
    with torch.no_grad():
        plain = net(x, t, ctx, mask)
    castable = [m for m in net.modules() if hasattr(m, "comfy_cast_weights")]
    patched = {_layer(model, k): k for k in model.patches}
    assert all(isinstance(m, host.layers._Quant) for m in patched)  # the LoRA's layers are all 8-bit
    try:
        for m in castable:
            m.comfy_cast_weights = True
            m.weight_lowvram_function = host.mp.LowVramPatch(patched[m], model.patches) if m in patched else None
        assert all(m.casts_per_call for m in castable)
        with torch.no_grad():
            out = net(x, t, ctx, mask)
    finally:
        for m in castable:
            del m.comfy_cast_weights, m.weight_lowvram_function
    assert (merged - plain).abs().max() > 1e-3
    assert (out - merged).abs().max() <= 1e-5 * max(1.0, merged.abs().max().item())


def _vae_encode_crop_pixels(vae, pixels):
    """The newer host's ``VAE.vae_encode_crop_pixels``: centre-crop to the compression, then fit the channels."""
    if vae.crop_input:
        ratio = vae.spacial_compression_encode()
        for d, size in enumerate(pixels.shape[1:-1]):
            if size % ratio:
                pixels = pixels.narrow(d + 1, (size % ratio) // 2, size // ratio * ratio)
    if pixels.shape[-1] > vae.output_channels:
        pixels = pixels[..., :vae.output_channels]
    elif pixels.shape[-1] < vae.output_channels and vae.pad_channel_value is not None:
        pixels = torch.nn.functional.pad(pixels, (0, vae.output_channels - pixels.shape[-1]),
                                         value=vae.pad_channel_value)
    return pixels


@pytest.fixture(scope="module")
def vae(host, wide):
    """SanaToVAE's VAE over the tiny DC-AE, built from the host's layers."""
    dcae = host.dcae.load_dcae(wide.dcae, torch.float32, operations=host.layers.Operations)
    holder = torch.nn.Module()
    holder.inner, holder.device = dcae, CPU
    return host.classes.SanaVAEAdapter(host.classes.new_patcher(holder, CPU, CPU, 1))


def test_vae_adapter_is_a_complete_host_vae(host, vae):
    """Every attribute the newer host's ``VAE.__init__`` sets is there, with the DC-AE's values, and the host's own
    helpers (0.3.75's and the newer ones, emulated) work on it."""
    assert [a for a in VAE_INIT_ATTRIBUTES if not hasattr(vae, a)] == []
    assert vae.spacial_compression_encode() == vae.spacial_compression_decode() == 32
    assert vae.temporal_compression_decode() is None
    pixels = torch.rand(2, 100, 70, 4)
    assert host.sd.VAE.vae_encode_crop_pixels(vae, pixels).shape == (2, 96, 64, 4)  # 0.3.75's
    cropped = _vae_encode_crop_pixels(vae, pixels)
    assert cropped.shape == (2, 96, 64, 3) and torch.equal(cropped, pixels[:, 2:98, 3:67, :3])
    assert vae.memory_used_decode((1, 32, 4, 4), vae.vae_dtype) == vae.first_stage_model.decode_memory((1, 32, 4, 4))
    assert vae.memory_used_encode((1, 3, 128, 128), vae.vae_dtype) > 0
    image = torch.rand(1, 3, 64, 64)
    assert torch.allclose(vae.process_output(vae.process_input(image)), image, atol=1e-6)
    assert vae.handles_tiling is False and vae.format_encoded is None and vae.pad_channel_value is None


def _fix_empty_latent_channels(model, latent, downscale_ratio_spacial=None):
    """The newer host's ``comfy.sample.fix_empty_latent_channels``: an empty latent gets the model's channels and,
    when its tag differs from the model's declared ratio, is resized to that ratio."""
    import comfy.utils

    fmt = model.get_model_object("latent_format")
    if torch.count_nonzero(latent) == 0:
        if fmt.latent_channels != latent.shape[1]:
            latent = comfy.utils.repeat_to_batch_size(latent, fmt.latent_channels, dim=1)
        if downscale_ratio_spacial is not None and downscale_ratio_spacial != fmt.spacial_downscale_ratio:
            ratio = downscale_ratio_spacial / fmt.spacial_downscale_ratio
            latent = comfy.utils.common_upscale(latent, round(latent.shape[-1] * ratio),
                                                round(latent.shape[-2] * ratio), "nearest-exact", crop="disabled")
    if fmt.latent_dimensions == 3 and latent.ndim == 4:
        latent = latent.unsqueeze(2)
    return latent


def test_sana_latents_declare_their_ratio(host, wide):
    """Sana's latent format declares 32 pixels per latent pixel: an empty Sana latent tagged 32 is kept as it is; a
    core empty latent tagged 8 (4 channels, 1/8 of the image) becomes the Sana latent of the same image."""
    model = _patcher(host, host.transformer.load_transformer(wide.path, "fp32", operations=host.layers.Operations))
    fmt = model.get_model_object("latent_format")
    assert (fmt.spacial_downscale_ratio, fmt.temporal_downscale_ratio) == (32, 1)
    sana = torch.zeros(1, 32, 32, 24)  # 1024 × 768
    assert _fix_empty_latent_channels(model, sana, 32).shape == (1, 32, 32, 24)
    assert _fix_empty_latent_channels(model, torch.zeros(1, 4, 128, 96), 8).shape == (1, 32, 32, 24)
    assert host.sample.fix_empty_latent_channels(model, sana).shape == (1, 32, 32, 24)  # 0.3.75's


def test_new_patcher_builds_the_hosts_core_patcher(host, monkeypatch):
    """``new_patcher`` builds ``CoreModelPatcher`` where the host has one (newer ComfyUI), passing the arguments its
    signature takes, else ``ModelPatcher`` (0.3.75)."""
    module = torch.nn.Linear(2, 2)
    monkeypatch.delattr(host.mp, "CoreModelPatcher", raising=False)
    p = host.classes.new_patcher(module, CPU, CPU, 24)
    assert type(p) is host.mp.ModelPatcher and p.size == 24 and p.load_device == CPU

    class Core(host.mp.ModelPatcher):  # the newer constructor's signature
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False, fast_disk=False):
            super().__init__(model, load_device, offload_device, size, weight_inplace_update)
            self.fast_disk = fast_disk

    class Unsized(host.mp.ModelPatcher):  # a constructor without ``size``
        def __init__(self, model, load_device, offload_device):
            super().__init__(model, load_device, offload_device)

    monkeypatch.setattr(host.mp, "CoreModelPatcher", Core, raising=False)
    p = host.classes.new_patcher(module, CPU, CPU, 24)
    assert type(p) is Core and p.size == 24 and p.fast_disk is False
    monkeypatch.setattr(host.mp, "CoreModelPatcher", Unsized, raising=False)
    assert type(host.classes.new_patcher(module, CPU, CPU, 24)) is Unsized


def test_models_load_when_the_hosts_linear_is_lazy(host, wide):
    """With ``comfy_aimdo`` active, the newer host's Linear creates no weight in ``__init__`` unless its class has
    its own state-dict loader; the pack's Linear has one, so its models build (on the meta device), pass the strict
    state-dict check and compute what the reference layers compute."""
    lazy = host.ops.disable_weight_init.Linear

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        if type(self)._load_from_state_dict is not lazy._load_from_state_dict:
            torch.nn.Linear.__init__(self, in_features, out_features, bias, device, dtype)
            return
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = self.bias = None
        self.comfy_need_lazy_init_bias = bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for k, v in state_dict.items():
            if k[len(prefix):] == "weight":
                self.weight = torch.nn.Parameter(v, requires_grad=False)
            elif k[len(prefix):] == "bias" and v is not None:
                self.bias = torch.nn.Parameter(v, requires_grad=False)
            else:
                unexpected_keys.append(k)

    own = {name: vars(lazy)[name] for name in ("__init__", "_load_from_state_dict") if name in vars(lazy)}
    lazy.__init__, lazy._load_from_state_dict = __init__, _load_from_state_dict
    try:
        host_net = host.transformer.load_transformer(wide.path, "fp32", operations=host.layers.Operations)
    finally:
        for name in ("__init__", "_load_from_state_dict"):
            if name in own:
                setattr(lazy, name, own[name])
            else:
                delattr(lazy, name)
    ref = host.transformer.load_transformer(wide.path, "fp32")
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(1, 32, 8, 8, generator=g), torch.tensor([700.0])
    ctx, mask = torch.randn(1, 12, wide.caption_channels, generator=g), torch.ones(1, 12)
    with torch.no_grad():
        assert (host_net(x, t, ctx, mask) - ref(x, t, ctx, mask)).abs().max() <= 1e-6
