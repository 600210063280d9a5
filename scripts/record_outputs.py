"""Record the outputs of the test fixtures, for refactors that must change no output.

    python scripts/record_outputs.py OUT.pt            # record
    python scripts/record_outputs.py OUT.pt --against BEFORE.pt   # record and compare bit for bit

Covers images, latents and embeddings of every variant and format the tests use: the tiny pipeline (CFG, PAG,
Flow-Euler, image-to-image, a batch, Sprint) through sana_core and through the nodes, each transformer variant in
every layout and dtype (int8 too, the speed forms on and off, PAG, a held caption), the text encoder with and without
the instruction, and the DC-AE whole and tiled, with its CPU speed forms at widths where they run. RECORD_THREADS
sets torch's thread count (default 2); record both files with the same count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # script-only: the tests' tiny-model builders
from support import inprocess  # noqa: E402

inprocess.setup()  # the package as sana_comfy, ComfyUI's modules in this process
torch.set_num_threads(int(os.environ.get("RECORD_THREADS", "2")))

PROMPT = "a small red house by a lake, watercolor"
Outputs = dict[str, torch.Tensor]


def _speed(module, on: bool):
    from sana_comfy.sana_core import speed

    return speed.apply(module, on)


def _held(model, x, t, y, mask, **kw):
    """A call with the caption held across calls, as a sampler's loop holds it (kept from the second call on)."""
    for _ in range(2):
        model(x, t, y, mask, **kw)
    return model(x, t, y, mask, **kw)


def pipeline_outputs(repo: Path) -> Outputs:
    """The tiny pipeline through sana_core: CFG, PAG, Flow-Euler, a batch, no binning; speed forms on and off; a bf16
    and an int8 transformer."""
    from sana_comfy.sana_core.load.dcae import load_dcae
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder
    from sana_comfy.sana_core.load.transformer import load_transformer
    from sana_comfy.sana_core.pipeline import SampleOptions, text_to_image

    out: Outputs = {}
    model, te, vae = load_transformer(repo, "fp32"), load_text_encoder(repo, torch.float32), load_dcae(repo, torch.float32)
    cases = {
        "cfg": dict(opts=SampleOptions(steps=4, cfg=4.5)),
        "pag": dict(opts=SampleOptions(steps=4, cfg=4.5, pag_scale=2.0, pag_layers="7,8")),
        "pag_nocfg_adaptive": dict(opts=SampleOptions(steps=4, cfg=1.0, pag_scale=2.0, pag_adaptive_scale=0.01)),
        "euler": dict(opts=SampleOptions(steps=4, cfg=4.5, sampler="flow_euler")),
        "batch": dict(opts=SampleOptions(steps=3, cfg=3.0), batch_size=2),
        "nobin": dict(opts=SampleOptions(steps=3), binning=False, height=256, width=192),
    }
    for name, kw in cases.items():
        kw = {"height": 320, "width": 200, **kw}
        out[f"pipe/{name}"] = text_to_image(model, te, vae, PROMPT, seed=3, **kw)
    for on in (True, False):
        _speed(model, on), _speed(vae, on)
        out[f"pipe/cfg_speed{int(on)}"] = text_to_image(model, te, vae, PROMPT, height=256, width=256, seed=4,
                                                        opts=SampleOptions(steps=3))
    _speed(model, True), _speed(vae, True)
    bf = load_transformer(repo, "bf16")
    out["pipe/bf16_transformer"] = text_to_image(bf, te, vae, PROMPT, height=256, width=256, seed=4,
                                                 opts=SampleOptions(steps=3))
    i8 = load_transformer(repo, "fp32", int8=True)
    out["pipe/int8_transformer"] = text_to_image(i8, te, vae, PROMPT, height=256, width=256, seed=4,
                                                 opts=SampleOptions(steps=3))
    return out


def node_outputs(repo: Path, tmp: Path) -> Outputs:
    """Text to image and image to image through the nodes (in-process, on ComfyUI's own modules)."""
    from support.pipeline import install_model_folders

    out: Outputs = {}
    models = tmp / "models"
    install_model_folders(repo, models)
    folders = inprocess.models_at(models)  # kept open for the rest of this process
    folders.__enter__()
    from sana_comfy.nodes import NODES as N

    m = N["SanaLoadTransformer"].execute("Sana_600M_1024px_diffusers", "fp32").result[0]
    t = N["SanaLoadTextEncoder"].execute("gemma-2-2b-it", "auto").result[0]
    v = N["SanaLoadDCAE"].execute("dc-ae-f32c32-sana-1.1-diffusers", "auto").result[0]
    pos = N["SanaEncodePrompt"].execute(t, "A red Fox", True, 300)[0]
    neg = N["SanaEncodePrompt"].execute(t, "", False, 300)[0]
    lat = N["SanaEmptyLatent"].execute(1000, 700, 1, True)[0]
    args = dict(seed=1, steps=3, cfg=4.5, sampler="flow_dpm_solver", flow_shift=0.0, pag_scale=1.5,
                pag_adaptive_scale=0.0, pag_layers="8", denoise=1.0)
    s = N["SanaSample"].execute(m, pos, neg, lat, **args)[0]
    out["nodes/latent"] = s["samples"]
    img = N["SanaDecode"].execute(v, s, "auto")[0]
    out["nodes/image"] = img
    enc = N["SanaEncodeImage"].execute(v, img)[0]
    out["nodes/encoded"] = enc["samples"]
    out["nodes/img2img"] = N["SanaSample"].execute(m, pos, neg, enc, **{**args, "denoise": 0.6})[0]["samples"]
    out["nodes/cond"] = pos[0][0]
    return out


def sprint_outputs(tmp: Path) -> Outputs:
    """The tiny Sana-Sprint pipeline through sana_core."""
    from sana_comfy.sana_core.load.dcae import load_dcae
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder
    from sana_comfy.sana_core.load.transformer import load_transformer
    from sana_comfy.sana_core.pipeline import SampleOptions, text_to_image
    from support.pipeline import build_tiny_repo

    sprint = build_tiny_repo(tmp / "sprint", sprint=True)
    sm = load_transformer(sprint, "fp32")
    ste = load_text_encoder(sprint, torch.float32)
    return {"pipe/sprint": text_to_image(sm, ste, load_dcae(sprint, torch.float32), PROMPT, height=256, width=256,
                                         seed=2, opts=SampleOptions(steps=2, cfg=4.5))}


def text_encoder_outputs(repo: Path) -> Outputs:
    """The text encoder in fp32 and bf16, with and without the instruction, and in int8."""
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder
    from sana_comfy.sana_core.text_encoder import DEFAULT_CHI

    out: Outputs = {}
    for dt in (torch.float32, torch.bfloat16):
        enc = load_text_encoder(repo, dt)
        e, mk = enc.encode(["A cat", "a much longer prompt about dogs"], chi=DEFAULT_CHI)
        out[f"te/{dt}/chi"], out[f"te/{dt}/chi_mask"] = e, mk
        out[f"te/{dt}/plain"] = enc.encode(["", "neg"], chi=None)[0]
    out["te/int8"] = load_text_encoder(repo, torch.float32, int8=True).encode(["A cat"])[0]
    return out


def transformer_outputs(tmp: Path) -> Outputs:
    """Each transformer variant × layout × dtype × form (speed forms on and off, PAG, a held caption, the fused
    forms in every dtype), and in int8."""
    from sana_comfy.sana_core.load.transformer import load_transformer
    from sana_comfy.sana_core.speed import policy
    from support.models import VARIANTS, save_layouts, tiny_diffusers_transformer, transformer_inputs

    out: Outputs = {}
    for variant, kw in VARIANTS.items():
        ref = tiny_diffusers_transformer(**kw)
        paths = save_layouts(ref, tmp / f"tr_{variant}")
        cfg = {k: v for k, v in ref.config.items() if not k.startswith("_")}
        x, y, mask, tt = transformer_inputs(h=6, w=10)
        g = {"guidance": torch.tensor([0.45, 0.3])} if variant == "guidance" else {}
        pag = dict(identity_blocks=frozenset({1}), n_identity=1)
        for layout in ("folder", "pth"):
            for dt in ("fp32", "bf16", "fp16"):
                mm = load_transformer(paths[layout], dt, config=None if layout == "folder" else cfg)
                xx, yy = x.to(mm.dtype), y.to(mm.dtype)
                with torch.no_grad():
                    for on in (True, False):
                        _speed(mm, on)
                        key = f"tr/{variant}/{layout}/{dt}/speed{int(on)}"
                        out[key] = mm(xx, tt, yy, mask, **g)
                        out[key + "/pag"] = mm(xx, tt, yy, mask, **g, **pag)
                    _speed(mm, True)
                    out[f"tr/{variant}/{layout}/{dt}/caption"] = _held(mm, xx, tt, yy, mask, **g)
                    out[f"tr/{variant}/{layout}/{dt}/caption2"] = _held(mm, xx, tt, yy, mask, **g, **pag)
                    if dt != "fp32":
                        with policy.forced(fused_blocks=True):  # the fused forms in every dtype, as on a GPU
                            out[f"tr/{variant}/{layout}/{dt}/fused_cpu"] = mm(xx, tt, yy, mask, **g)
        mm = load_transformer(paths["folder"], "bf16", int8=True)
        with torch.no_grad():
            out[f"tr/{variant}/int8"] = mm(x.bfloat16(), tt, y.bfloat16(), mask, **g)
    return out


def dcae_outputs(tmp: Path) -> Outputs:
    """The DC-AE from two layouts in fp32 and bf16: encode, decode and tiled decode, speed forms on and off."""
    from sana_comfy.sana_core.load.dcae import load_dcae
    from support.vae import make_tiny_dcae

    out: Outputs = {}
    dc = make_tiny_dcae(tmp / "dcae")
    for name in ("vae_dir", "original_file"):
        for dt in (torch.float32, torch.bfloat16):
            d = load_dcae(dc[name], dt)
            img = torch.rand(1, 3, 128, 96) * 2 - 1
            with torch.no_grad():
                for on in (True, False):
                    _speed(d, on)
                    lat = d.encode(img.to(dt))
                    out[f"dcae/{name}/{dt}/enc{int(on)}"] = lat
                    out[f"dcae/{name}/{dt}/dec{int(on)}"] = d.decode(lat)
                    out[f"dcae/{name}/{dt}/tiled{int(on)}"] = d.decode(lat, tiling="on", tile_px=64, stride_px=32)
    return out


def dcae_block_outputs() -> Outputs:
    """DC-AE blocks wide enough for the Winograd and folded forms, speed forms on and off."""
    from sana_comfy.sana_core import dcae_blocks

    out: Outputs = {}
    g = torch.Generator().manual_seed(0)

    def filled(mod):
        with torch.no_grad():
            for p in mod.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        return mod.eval()

    blocks = {
        "res256": (dcae_blocks.ResBlock(256), (1, 256, 16, 12)),
        "res128": (dcae_blocks.ResBlock(128), (1, 128, 8, 8)),
        "up": (dcae_blocks.DCUpBlock2d(256, 128, True), (1, 256, 8, 6)),
        "down": (dcae_blocks.DCDownBlock2d(128, 256, False), (1, 128, 16, 12)),
        "evit": (dcae_blocks.EfficientViTBlock(64, 8, (5,)), (1, 64, 8, 8)),
    }
    for name, (mod, shape) in blocks.items():
        filled(mod)
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            for on in (True, False):
                _speed(mod, on)
                out[f"block/{name}/speed{int(on)}"] = mod(x.contiguous(memory_format=torch.channels_last)
                                                          if on and name != "evit" else x).contiguous()
    return out


def record() -> Outputs:
    """Every group's outputs, in one fixed order (the groups share torch's global random state)."""
    from support.pipeline import build_tiny_repo

    tmp = Path(tempfile.mkdtemp())
    repo = build_tiny_repo(tmp / "tiny")
    out: Outputs = {}
    out.update(pipeline_outputs(repo))
    out.update(node_outputs(repo, tmp))
    out.update(sprint_outputs(tmp))
    out.update(text_encoder_outputs(repo))
    out.update(transformer_outputs(tmp))
    out.update(dcae_outputs(tmp))
    out.update(dcae_block_outputs())
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--against")
    a = ap.parse_args()
    torch.manual_seed(0)
    got = record()
    torch.save(got, a.out)
    print(f"recorded {len(got)} outputs to {a.out}")
    if a.against:
        want = torch.load(a.against)
        missing = sorted(set(want) ^ set(got))
        diff = [k for k in sorted(set(want) & set(got))
                if want[k].dtype != got[k].dtype or want[k].shape != got[k].shape or not torch.equal(want[k], got[k])]
        for k in diff:
            print("DIFFERS", k, (want[k].float() - got[k].float()).abs().max().item()
                  if want[k].shape == got[k].shape else (want[k].shape, got[k].shape))
        print(f"{len(want)} recorded before, {len(got)} now; {len(missing)} keys differ in name: {missing[:10]}; "
              f"{len(diff)} outputs differ")
        sys.exit(1 if diff or missing else 0)


if __name__ == "__main__":
    main()
