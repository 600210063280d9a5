"""SANA-Video in a real ComfyUI: a whole diffusers repo through Sana Load Pipeline (the Wan VAE as ComfyUI's own),
SanaSample and KSampler on 5-D latents equal to each other and to diffusers' SanaVideoPipeline /
SanaImageToVideoPipeline per frame; the Comfy-format wan_2.1_vae through Load VAE; errors that name the cause."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sana_comfy.sana_core.video import DEFAULT_NEGATIVE
from support.comfy_server import ComfyServer, WsListener
from support.video import VIDEO_REPO, WAN_VAE_FILE, install_video_folders

pytestmark = pytest.mark.host
W, H, FRAMES = 96, 64, 9  # 3 latent frames of 12×8 cells
PROMPT = "a fox runs through the snow"
NEGATIVE = DEFAULT_NEGATIVE.lower()  # the reference lowercases prompts (clean_caption off); the node keeps case
ARGS = dict(seed=11, steps=8, cfg=6.0)  # 1000/steps whole: the simple scheduler gives the reference sigmas
START = "sana_video_start.png"


LORA, HOST_LORA, LORA_STRENGTH = "sana_video_lora.safetensors", "sana_video_lora_onetrainer.safetensors", 0.8


@pytest.fixture(scope="module")
def server(host_base, video_repo):
    from diffusers import SanaVideoTransformer3DModel
    from support.lora import peft_lora, save_layout

    base = host_base("video", inputs=True)
    install_video_folders(video_repo, base / "models")
    net = SanaVideoTransformer3DModel.from_pretrained(video_repo / "transformer")
    sd = peft_lora(net, rank=4, seed=40, std=0.2)
    save_layout(sd, base / "models" / "loras" / LORA, "peft", alpha=8.0)  # diffusers' own layout
    # ComfyUI's own loader reads alpha from the keys, not from a PEFT file's metadata: the same LoRA in OneTrainer's
    save_layout(sd, base / "models" / "loras" / HOST_LORA, "onetrainer", alpha=8.0)
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 6, generator=g), size=(H, W), mode="bilinear")
    Image.fromarray((smooth[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(base / "input" / START)
    with ComfyServer(base, ("--preview-method", "latent2rgb")) as srv:
        yield srv


def _graph(latent: dict) -> dict:
    enc = lambda text, chi, score: {"class_type": "SanaEncodePrompt", "inputs": {  # noqa: E731
        "text_encoder": ["1", 1], "text": text, "use_chi": chi, "max_length": 300, "instruction": "video",
        "motion_score": score}}
    return {"1": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": VIDEO_REPO, "weight_dtype": "auto"}},
            "2": enc(PROMPT, True, 30), "3": enc(NEGATIVE, False, -1), "4": latent,
            "10": {"class_type": "SanaToModel", "inputs": {"model": ["1", 0]}},
            "11": {"class_type": "VAELoader", "inputs": {"vae_name": WAN_VAE_FILE}}}


def _samplers(p: dict, positive=("2", 0), negative=("3", 0), latent=("4", 0)) -> None:
    """SanaSample "s" and KSampler "k" on the same inputs; each latent saved, decoded by Sana Decode Video with the
    repo's VAE ("ds", "dk") and by VAE Decode with Load VAE's ("vk"), and saved."""
    p["s"] = {"class_type": "SanaSample", "inputs": {
        "model": ["1", 0], "positive": list(positive), "negative": list(negative), "latent": list(latent),
        "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": 0.0, "pag_adaptive_scale": 0.0,
        "pag_layers": "", "denoise": 1.0, **ARGS}}
    p["k"] = {"class_type": "KSampler", "inputs": {
        "model": ["10", 0], "sampler_name": "sana_flow_dpm_solver", "scheduler": "simple", "positive": list(positive),
        "negative": list(negative), "latent_image": list(latent), "denoise": 1.0, **ARGS}}
    p["ds"] = {"class_type": "SanaDecodeVideo", "inputs": {"vae": ["1", 3], "samples": ["s", 0], "tiled": False}}
    p["dk"] = {"class_type": "SanaDecodeVideo", "inputs": {"vae": ["1", 3], "samples": ["k", 0], "tiled": True}}
    p["vk"] = {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["k", 0]}}
    for n in ("s", "k"):
        p[f"{n}save"] = {"class_type": "SaveLatent", "inputs": {"samples": [n, 0], "filename_prefix": f"video/{n}"}}
    for n in ("ds", "dk", "vk"):
        p[f"{n}save"] = {"class_type": "SaveImage", "inputs": {"images": [n, 0], "filename_prefix": f"video/{n}"}}


def _results(server, hist) -> tuple[dict, dict]:
    """(latents by sampler node, frames (F, H, W, 3) uint8 by decode node)."""
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + server.log()[-3000:]
    latents, frames = {}, {}
    for node, o in hist["outputs"].items():
        node = node.removesuffix("save")
        for f in o.get("latents", []):
            latents[node] = load_file(server.base / "output" / f["subfolder"] / f["filename"])["latent_tensor"]
        if o.get("images"):
            frames[node] = np.stack([np.asarray(Image.open(server.base / "output" / i["subfolder"] / i["filename"]))
                                     for i in o["images"]])
    return latents, frames


def _reference(pipe, lora=None, **kw) -> np.ndarray:
    """The diffusers pipeline's frames as SaveImage writes them (uint8); ``lora``: a file fused at LORA_STRENGTH."""
    if lora is not None:
        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
        pipe.fuse_lora(lora_scale=LORA_STRENGTH)
    out = pipe(prompt=f"{PROMPT} motion score: 30.", negative_prompt=NEGATIVE, height=H, width=W, frames=FRAMES,
               num_inference_steps=ARGS["steps"], guidance_scale=ARGS["cfg"], use_resolution_binning=False,
               generator=torch.Generator().manual_seed(ARGS["seed"]), output_type="np", **kw).frames[0]
    return np.clip(255.0 * out, 0, 255).astype(np.uint8)


def _check(latents, frames, ref, what, decodes=("ds", "dk", "vk")):
    d = (latents["s"] - latents["k"]).abs().max().item()
    assert d <= 1e-4, f"{what}: SanaSample and KSampler latents differ by {d}"
    assert ref.shape == (FRAMES, H, W, 3) and ref.std() > 5
    for node in decodes:
        assert frames[node].shape == ref.shape, node
        per_frame = np.abs(frames[node].astype(int) - ref.astype(int)).reshape(FRAMES, -1).max(axis=1)
        assert per_frame.max() <= 2, f"{what}, {node}: frames differ from diffusers by {per_frame.tolist()}/255"


def test_text_to_video_equals_the_reference(server, video_repo):
    from diffusers import SanaVideoPipeline

    p = _graph({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                  "batch_size": 1, "resolution_binning": False,
                                                                  "model": ["1", 0]}})
    _samplers(p)
    p["hy"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                    "batch_size": 1}}
    p["khy"] = {**p["k"], "inputs": {**p["k"]["inputs"], "latent_image": ["hy", 0]}}
    p["khysave"] = {"class_type": "SaveLatent", "inputs": {"samples": ["khy", 0], "filename_prefix": "video/khy"}}
    latents, frames = _results(server, server.run(p, timeout=600))
    assert latents["s"].shape == (1, 16, 3, H // 8, W // 8)
    assert torch.equal(latents["khy"], latents["k"])  # ComfyUI's own empty video latent is the same
    _check(latents, frames, _reference(SanaVideoPipeline.from_pretrained(video_repo)), "text to video")


def test_image_to_video_equals_the_reference(server, video_repo):
    from diffusers import SanaImageToVideoPipeline

    p = _graph({"class_type": "SanaImageToVideo", "inputs": {
        "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 3], "start_image": ["img", 0], "width": W,
        "height": H, "length": FRAMES, "batch_size": 1, "resolution_binning": False, "model": ["1", 0]}})
    p["img"] = {"class_type": "LoadImage", "inputs": {"image": START}}
    _samplers(p, positive=("4", 0), negative=("4", 1), latent=("4", 2))
    latents, frames = _results(server, server.run(p, timeout=600))
    ref = _reference(SanaImageToVideoPipeline.from_pretrained(video_repo),
                     image=Image.open(server.base / "input" / START).convert("RGB"))
    _check(latents, frames, ref, "image to video")
    # the first frame is the start image through the VAE
    start = np.asarray(Image.open(server.base / "input" / START).convert("RGB")).astype(int)
    assert np.abs(frames["ds"][0].astype(int) - start).mean() < np.abs(frames["ds"][-1].astype(int) - start).mean()


def test_lora_equals_diffusers_fused_lora(server, video_repo):
    """The pack's LoRA loader → SanaSample and ComfyUI's LoraLoaderModelOnly on Sana to MODEL → KSampler give
    diffusers' frames with the LoRA fused at the same strength."""
    from diffusers import SanaVideoPipeline

    p = _graph({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                  "batch_size": 1, "resolution_binning": False}})
    p["l"] = {"class_type": "SanaLoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": LORA,
                                                                   "strength_model": LORA_STRENGTH}}
    p["hl"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": HOST_LORA,
                                                               "strength_model": LORA_STRENGTH}}
    _samplers(p)
    p["s"]["inputs"]["model"], p["k"]["inputs"]["model"] = ["l", 0], ["hl", 0]
    for n in ("dk", "vk", "dksave", "vksave"):
        del p[n]
    latents, frames = _results(server, server.run(p, timeout=600))
    plain = _reference(SanaVideoPipeline.from_pretrained(video_repo))
    ref = _reference(SanaVideoPipeline.from_pretrained(video_repo), lora=server.base / "models" / "loras" / LORA)
    assert np.abs(ref.astype(int) - plain.astype(int)).max() > 10  # the LoRA changes the video
    _check(latents, frames, ref, "LoRA", decodes=("ds",))


def test_conditioning_tools_act_alike_in_both_samplers(server):
    """ComfyUI's conditioning tools on a video: SanaSample equals KSampler, and each changes the video."""
    p = _graph({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                  "batch_size": 1, "resolution_binning": False}})
    p["5"] = {**p["2"], "inputs": {**p["2"]["inputs"], "text": "a snowy owl glides over a frozen lake"}}
    p["ccombine"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                     "conditioning_2": ["5", 0]}}
    p["crange0"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["5", 0], "start": 0.5,
                                                                            "end": 1.0}}
    p["crange"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                   "conditioning_2": ["crange0", 0]}}
    for tag in ("plain", "combine", "range"):
        positive = ["2", 0] if tag == "plain" else [f"c{tag}", 0]
        p[f"s{tag}"] = {"class_type": "SanaSample", "inputs": {
            "model": ["1", 0], "positive": positive, "negative": ["3", 0], "latent": ["4", 0],
            "sampler": "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": 0.0, "pag_adaptive_scale": 0.0,
            "pag_layers": "", "denoise": 1.0, **ARGS}}
        p[f"k{tag}"] = {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "sampler_name": "sana_flow_dpm_solver", "scheduler": "simple", "positive": positive,
            "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0, **ARGS}}
        for n in "sk":
            p[f"{n}{tag}save"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"{n}{tag}", 0],
                                                                          "filename_prefix": f"video/{n}{tag}"}}
    del p["11"]
    latents, _ = _results(server, server.run(p, timeout=600))
    for tag in ("plain", "combine", "range"):
        assert (latents[f"s{tag}"] - latents[f"k{tag}"]).abs().max().item() <= 1e-4, tag
        if tag != "plain":
            assert (latents[f"s{tag}"] - latents["splain"]).abs().max().item() > 1e-3, tag


def test_previews_progress_and_interrupt(server):
    """Both samplers send a latent→RGB preview of the first frame per step (the host's Wan 2.1 factors); an
    interrupt ends SanaSample at its next step, and the server keeps serving."""
    p = _graph({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                  "batch_size": 1, "resolution_binning": False}})
    _samplers(p)
    for n in ("ds", "dk", "vk", "dssave", "dksave", "vksave", "11"):
        del p[n]
    p["s"]["inputs"].update(seed=21, steps=3)
    p["k"]["inputs"].update(seed=21, steps=3)
    ws = WsListener(server)
    try:
        hist = server.wait(server.queue(p, ws.client_id))
        frames = ws.preview_images()
    finally:
        ws.close()
    assert hist["status"]["status_str"] == "success"
    # the host scales a preview to 512 px on its long side: the first frame's 12 × 8 cells at 3:2
    assert len(frames) == 6 and all(f.shape == (341, 512, 3) and f.std() > 1 for f in frames), [f.shape for f in frames]
    p["s"]["inputs"].update(seed=22, steps=400)
    del p["k"], p["ksave"]
    ws = WsListener(server)
    try:
        pid = server.queue(p, ws.client_id)
        assert ws.wait_progress("s", 3)[0]["max"] == 400
        assert server.post("/interrupt", {})[0] == 200
        hist = server.wait(pid, 120)
    finally:
        ws.close()
    assert hist["status"]["status_str"] == "error"
    assert max(e["value"] for e in ws.of_type("progress") if e["node"] == "s") < 400


@pytest.mark.parametrize("storage", ["int8", "fp8_e4m3fn"])
def test_8_bit_storage_samples_close_to_full_precision(server, storage):
    """int8 / fp8 weight storage through Sana Load Transformer samples in the host. The tiny model's layers are too
    narrow for 8-bit storage (tests/test_video_transformer.py checks a wider one), so this checks the path."""
    p = _graph({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                  "batch_size": 1, "resolution_binning": False}})
    p["q"] = {"class_type": "SanaLoadTransformer", "inputs": {"model_name": VIDEO_REPO, "weight_dtype": storage}}
    _samplers(p)
    p["q8"] = {**p["s"], "inputs": {**p["s"]["inputs"], "model": ["q", 0]}}
    p["q8save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["q8", 0], "filename_prefix": "video/q8"}}
    for n in ("k", "ds", "dk", "vk", "ksave", "dssave", "dksave", "vksave"):
        del p[n]
    latents, _ = _results(server, server.run(p, timeout=600))
    full, q = latents["s"], latents["q8"]
    assert q.shape == full.shape and torch.isfinite(q).all()
    assert (q - full).abs().mean() < 0.1 * full.abs().mean(), (q - full).abs().mean()


@pytest.mark.parametrize("node, message", [
    ({"class_type": "SanaEmptyLatent", "inputs": {"width": 256, "height": 256, "batch_size": 1,
                                                   "resolution_binning": False, "model": ["1", 0]}},
     "SANA-Video model, which samples video latents: use Sana Empty Video Latent"),
    ({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": 10, "batch_size": 1,
                                                        "resolution_binning": False}},
     r"10 frames: the Wan VAE represents 4k\+1 frames"),
    ({"class_type": "SanaDecode", "inputs": {"vae": ["1", 2], "samples": ["e", 0], "tiling": "auto"}},
     "Sana Decode takes the DC-AE of a Sana image repo; this is a SANA-Video repo's Wan 2.1 VAE"),
    ({"class_type": "SanaSample", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent": ["i", 0], "sampler":
        "flow_dpm_solver", "flow_shift": 0.0, "pag_scale": 0.0, "pag_adaptive_scale": 0.0, "pag_layers": "",
        "denoise": 1.0, **ARGS}},
     r"an image latent; a SANA-Video model samples Wan 2.1 video latents"),
    ({"class_type": "SanaDecodeVideo", "inputs": {"vae": ["dcae", 0], "samples": ["e", 0], "tiled": False}},
     "this VAE makes 32-channel 2-D latents; SANA-Video takes the Wan 2.1 VAE"),
    ({"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": 9, "batch_size": 1,
                                                        "resolution_binning": False, "model": ["img", 0]}},
     "the connected model is a Sana image model"),
], ids=["image latent node", "frames", "dc-ae node", "image latent", "sd vae", "image model"])
def test_bad_input_is_named_and_the_server_keeps_serving(server, node, message):
    video_latent = {"class_type": "SanaEmptyVideoLatent", "inputs": {"width": W, "height": H, "length": FRAMES,
                                                                      "batch_size": 1, "resolution_binning": False}}
    p = {"1": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": VIDEO_REPO, "weight_dtype": "auto"}},
         "2": {"class_type": "SanaEncodePrompt", "inputs": {"text_encoder": ["1", 1], "text": PROMPT,
                                                            "use_chi": True, "max_length": 300}},
         "e": video_latent,
         "i": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "img": {"class_type": "SanaLoadTransformer", "inputs": {"model_name": "Sana_600M_1024px_diffusers",
                                                                 "weight_dtype": "auto"}},
         "pipe": {"class_type": "SanaLoadPipeline", "inputs": {"pipeline": "Sana_600M_1024px_diffusers",
                                                               "weight_dtype": "auto"}},
         "dcae": {"class_type": "SanaToVAE", "inputs": {"vae": ["pipe", 2]}},
         "x": node}
    images = node["class_type"] in ("SanaDecode", "SanaDecodeVideo")
    p["out"] = ({"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}} if images else
                {"class_type": "SaveLatent", "inputs": {"samples": ["x", 0], "filename_prefix": "video/bad"}})
    err = server.error(p)
    assert err["node_type"] == node["class_type"]
    assert re.search(message, err["exception_message"]), err["exception_message"]
    assert server.get("/system_stats")["system"]  # still up
