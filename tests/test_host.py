"""Real-host tests: a real ComfyUI 0.3.75 on CPU, this package linked into custom_nodes, tiny weights in its model
folders, driven over HTTP and its websocket."""

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sana_comfy.sana_core import bins
from sana_comfy.sana_core.bins import aspect_size
from sana_comfy.sana_core.bins import plan as bin_plan
from support import ROOT
from support.comfy_server import ComfyServer, WsListener

pytestmark = pytest.mark.host
WORKFLOWS = sorted((ROOT / "example_workflows" / "api").glob("*.json"))
NODES = {
    "SanaLoadTextEncoder": (["text_encoder", "dtype"], ["SANA_TEXT_ENCODER"]),
    "SanaEncodePrompt": (["text_encoder", "text", "use_chi", "max_length"], ["CONDITIONING"]),
    "SanaLoadTransformer": (["model_name", "weight_dtype"], ["SANA_MODEL"]),
    "SanaLoadDCAE": (["vae_name", "dtype"], ["SANA_VAE"]),
    "SanaLoadPipeline": (["pipeline", "weight_dtype"], ["SANA_MODEL", "SANA_TEXT_ENCODER", "SANA_VAE", "VAE"]),
    "SanaEmptyLatent": (["width", "height", "batch_size", "resolution_binning"], ["LATENT"]),
    "SanaSample": (["model", "positive", "negative", "latent", "seed", "steps", "cfg", "sampler", "flow_shift",
                    "pag_scale", "pag_adaptive_scale", "pag_layers", "denoise"], ["LATENT"]),
    "SanaDecode": (["vae", "samples", "tiling"], ["IMAGE"]),
    "SanaEncodeImage": (["vae", "image"], ["LATENT"]),
}


@pytest.fixture(scope="module")
def server(host_base):
    # input/: only what a fresh ComfyUI has (its example.png, 768 x 768 RGB, which the image-to-image, inpaint,
    # outpaint and ControlNet templates load): the templates must run without test-made files
    with ComfyServer(host_base("comfy", inputs=True)) as srv:
        yield srv


# The inpaint template's default region on example.png (x 256..512, y 320..672), grown 32 px by its GrowMask: the
# repainted rectangle, on the 32 px latent grid.
GROWN_X, GROWN_Y = (224, 544), (288, 704)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _images(server, hist: dict) -> list[np.ndarray]:
    out = []
    for node in hist["outputs"].values():
        for im in node.get("images", []):
            p = server.base / "output" / im["subfolder"] / im["filename"]
            out.append(np.asarray(Image.open(p).convert("RGB")))
    return out


def test_object_info_lists_every_node(server):
    info = server.get("/object_info")
    for node, (inputs, outputs) in NODES.items():
        assert node in info, f"{node} missing; server log:\n{server.log()[-2000:]}"
        spec = info[node]
        assert spec["category"] == "Sana"
        assert spec["input_order"]["required"] == inputs
        assert spec["output"] == outputs
    assert "chi" in info["SanaEncodePrompt"]["input"]["optional"]
    def options(node, name):
        kind, spec = info[node]["input"]["required"][name]
        assert kind == "COMBO", kind  # the node API's combo form, which every frontend reads
        return spec["options"]

    assert options("SanaLoadTransformer", "model_name") == ["SANA-Video_2B_480p_diffusers", "Sana_600M_1024px_diffusers"]
    assert options("SanaLoadTextEncoder", "text_encoder") == ["gemma-2-2b-it"]
    assert "dc-ae-f32c32-sana-1.1-diffusers" in options("SanaLoadDCAE", "vae_name")
    assert info["SanaSample"]["python_module"].endswith("comfyui-sana") and info["SanaSample"]["description"]


def _video_frames(server, hist: dict) -> list[np.ndarray]:
    """The frames of the one video a workflow saved (an MP4 through ComfyUI's Save Video)."""
    import av

    (node,) = [o for o in hist["outputs"].values() if o.get("animated")]
    (v,) = node["images"]
    with av.open(str(server.base / "output" / v["subfolder"] / v["filename"])) as f:
        return [frame.to_ndarray(format="rgb24") for frame in f.decode(video=0)]


@pytest.mark.parametrize("wf", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_example_workflow_runs(server, wf):
    hist = server.run(_load(wf), timeout=900)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + server.log()[-3000:]
    if "video" in wf.stem:  # 81 frames of 832 x 480: the bin of 832 x 480 is itself
        frames = _video_frames(server, hist)
        assert len(frames) == 81 and all(f.shape == (480, 832, 3) for f in frames)
        assert all(f.std() > 2 for f in frames)
        return
    imgs = _images(server, hist)
    want = {"sana_image_to_image": (768, 768), "sana_inpaint": (768, 768), "sana_outpaint": (768, 1024)}.get(
        wf.stem, (1024, 1024))  # example.png is 768 x 768; outpaint adds 128 px left and right
    assert imgs and all(i.shape[:2] == want for i in imgs)
    assert all(i.std() > 2 for i in imgs)  # not a flat (black/grey) image


def _run_with_reference(server, name: str, steps: int = 8):
    """Queues an example workflow (with a SaveLatent on SanaSample's output) and its reference: the same graph
    without SanaSample and the noise mask, so it decodes the encoded input itself (the tiny random DC-AE does not
    reproduce its input; decode(encode(input)) is what a kept latent decodes to). Returns (image, latent) of each,
    and the noise mask the workflow fed to SanaSample, resized to the latent as ComfyUI does."""
    from safetensors.torch import load_file

    prompt = _load(ROOT / "example_workflows" / "api" / f"{name}.json")
    prompt["7"]["inputs"]["steps"] = steps
    prompt["13"] = {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": f"sana/{name}"}}
    ref = copy.deepcopy(prompt)
    del ref["7"], ref["12"]
    ref["8"]["inputs"]["samples"] = ref["13"]["inputs"]["samples"] = ["10", 0]
    ref["9"]["inputs"]["filename_prefix"] = ref["13"]["inputs"]["filename_prefix"] = f"sana/{name}_ref"
    outs = []
    for p in (prompt, ref):
        hist = server.run(p)
        assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + server.log()[-3000:]
        (img,) = _images(server, hist)
        (lat,) = hist["outputs"]["13"]["latents"]
        latent = load_file(server.base / "output" / lat["subfolder"] / lat["filename"])["latent_tensor"]
        outs.append((img.astype(np.float64), latent.float()))
    return outs


def _latent_mask(mask: np.ndarray, latent: torch.Tensor) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(m, size=latent.shape[-2:], mode="bilinear")[0, 0]


def test_inpaint_keeps_the_unmasked_latent(server):
    (got, got_lat), (ref, ref_lat) = _run_with_reference(server, "sana_inpaint")
    assert got.shape == ref.shape == (768, 768, 3)
    inside = np.zeros((768, 768), bool)
    inside[GROWN_Y[0]:GROWN_Y[1], GROWN_X[0]:GROWN_X[1]] = True
    keep = _latent_mask(inside, got_lat) == 0  # on the 32 px grid: latent rows 9..21, columns 7..16 repaint
    assert keep.sum() == 24 * 24 - 13 * 10
    dlat = (got_lat - ref_lat).abs()
    # The latent outside the grown region is the encoded input (measured: max |diff| 1.9e-6); inside it is repainted
    # (measured: mean |diff| 8.5, the latent's own mean |value| is 6.9).
    assert dlat[..., keep].max() < 1e-4 and dlat[..., ~keep].mean() > 1.0
    # In pixels: the tiny random DC-AE's decoder spreads any latent change across the image, so the kept part is
    # close, not equal. Measured (0..255): mean |diff| outside the region 3.0, 48 px or more away 0.9; inside 58.6.
    diff = np.abs(got - ref).mean(-1)
    ys, xs = np.arange(768)[:, None], np.arange(768)[None]
    dist = np.maximum(np.maximum(GROWN_Y[0] - ys, ys - GROWN_Y[1] + 1),
                      np.maximum(GROWN_X[0] - xs, xs - GROWN_X[1] + 1))  # px outside the region (Chebyshev)
    assert diff[~inside].mean() < 10 and diff[dist >= 48].mean() < 4
    assert diff[inside].mean() > 2 * diff[~inside].mean() and diff[inside].mean() > 25


def test_outpaint_widens_and_keeps_the_centre(server):
    (got, got_lat), (ref, ref_lat) = _run_with_reference(server, "sana_outpaint")
    assert got.shape == ref.shape == (768, 128 + 768 + 128, 3)  # the input, 128 px of new canvas each side
    # ImagePadForOutpaint feathers the input's outer 32 px into the mask: latent columns 4 and 27 are partly
    # repainted, 5..26 are kept (measured: max |diff| 1.9e-6), 0..3 and 28..31 are new (measured: mean 11.0, 10.9).
    dlat = (got_lat - ref_lat).abs()
    assert dlat[..., 5:27].max() < 1e-4 and dlat[..., :4].mean() > 1.0 and dlat[..., 28:].mean() > 1.0
    # In pixels (0..255; see the inpaint test on the tiny DC-AE): the input's middle 384 px measured mean |diff|
    # 1.2, the new canvas 60.6 and 55.6.
    diff = np.abs(got - ref).mean(-1)
    assert diff[:, 320:704].mean() < 6
    assert diff[:, :128].mean() > 25 and diff[:, 896:].mean() > 25


def test_requeue_is_served_from_cache(server):
    prompt = _load(ROOT / "example_workflows" / "api" / "sana_pipeline_loader.json")
    prompt["7"]["inputs"]["seed"] = 1234
    first = server.run(prompt)
    assert first["status"]["status_str"] == "success"
    ws = WsListener(server)
    try:
        pid = server.queue(prompt, ws.client_id)
        second = server.wait(pid)
        time.sleep(0.3)
        cached = [n for e in ws.of_type("execution_cached") if e["prompt_id"] == pid for n in e["nodes"]]
        executing = [e["node"] for e in ws.of_type("executing") if e.get("prompt_id") == pid and e["node"]]
    finally:
        ws.close()
    assert second["status"]["status_str"] == "success"
    assert set(cached) >= {"1", "4", "5", "6", "7", "8"} and "7" not in executing


def test_progress_events_and_interrupt(server):
    prompt = _load(ROOT / "example_workflows" / "api" / "sana_pipeline_loader.json")
    prompt["7"]["inputs"].update(seed=99, steps=400)
    ws = WsListener(server)
    try:
        pid = server.queue(prompt, ws.client_id)
        progress = ws.wait_progress("7", 3)
        assert progress and progress[0]["max"] == 400
        assert server.post("/interrupt", {})[0] == 200
        hist = server.wait(pid, 120)
        time.sleep(0.3)
        interrupted = ws.of_type("execution_interrupted")
    finally:
        ws.close()
    assert hist["status"]["status_str"] == "error"
    assert any(e["prompt_id"] == pid for e in interrupted)
    assert max(e["value"] for e in ws.of_type("progress") if e["node"] == "7") < 400
    prompt["7"]["inputs"].update(seed=100, steps=3)
    assert server.run(prompt)["status"]["status_str"] == "success"  # the host keeps serving


def test_workflow_matches_diffusers(server, tiny_repo):
    import diffusers

    prompt = copy.deepcopy(_load(ROOT / "example_workflows" / "api" / "sana_text_to_image.json"))
    text = "a cyberpunk cat with a neon sign, lowercase"
    prompt["4"]["inputs"]["text"] = text
    prompt["6"]["inputs"].update(width=640, height=448)  # a binned, non-square size
    prompt["7"]["inputs"].update(seed=77, steps=8)
    prompt["9"]["inputs"]["filename_prefix"] = "sana/parity"
    hist = server.run(prompt)
    assert hist["status"]["status_str"] == "success", server.log()[-3000:]
    (got,) = _images(server, hist)
    pipe = diffusers.SanaPipeline.from_pretrained(tiny_repo, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=text, height=448, width=640, num_inference_steps=8, guidance_scale=4.5,
               generator=torch.Generator("cpu").manual_seed(77), output_type="np").images[0]
    want = np.clip(ref * 255.0, 0, 255).astype(np.uint8)  # as SaveImage quantises
    assert got.shape == want.shape == (448, 640, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def _pipeline_graph(**sample):
    prompt = _load(ROOT / "example_workflows" / "api" / "sana_pipeline_loader.json")
    prompt["6"]["inputs"].update(width=256, height=256)
    prompt["7"]["inputs"].update(steps=2, **sample)
    return prompt


def test_generic_latent_nodes_work_on_sana_latents(server):
    prompt = _pipeline_graph(seed=5)
    prompt["6"]["inputs"].update(width=200, height=320)  # binned to 768x1280, cropped back to 200x320
    prompt["20"] = {"class_type": "LatentUpscaleBy",
                    "inputs": {"samples": ["6", 0], "upscale_method": "nearest-exact", "scale_by": 1.5}}
    prompt["21"] = {"class_type": "LatentBatch", "inputs": {"samples1": ["20", 0], "samples2": ["20", 0]}}
    prompt["7"]["inputs"]["latent"] = ["21", 0]
    hist = server.run(prompt)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    imgs = _images(server, hist)
    assert len(imgs) == 2 and all(i.shape[:2] == (480, 300) for i in imgs)  # the upscale survives the crop


def test_wrong_channel_latent_fails_clearly_and_server_keeps_serving(server):
    prompt = _pipeline_graph(seed=6)
    prompt["20"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}
    prompt["7"]["inputs"]["latent"] = ["20", 0]
    hist = server.run(prompt)
    assert hist["status"]["status_str"] == "error"
    err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
    assert "4 channels" in err["exception_message"] and "32" in err["exception_message"]
    assert server.run(_pipeline_graph(seed=7))["status"]["status_str"] == "success"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_memory_returns_after_interrupt(server):
    warm = _pipeline_graph(seed=31)
    warm["6"]["inputs"].update(width=1024, height=1024)
    assert server.run(warm)["status"]["status_str"] == "success"
    before = _rss_mb(server.proc.pid)
    ws = WsListener(server)
    try:
        long = copy.deepcopy(warm)
        long["7"]["inputs"].update(seed=32, steps=500)
        pid = server.queue(long, ws.client_id)
        end = time.time() + 120
        while time.time() < end and not [e for e in ws.of_type("progress") if e["node"] == "7" and e["value"] >= 2]:
            time.sleep(0.05)
        server.post("/interrupt", {})
        assert server.wait(pid, 120)["status"]["status_str"] == "error"
    finally:
        ws.close()
    after = _rss_mb(server.proc.pid)
    assert after <= before + 64, (before, after)


def test_fuzz_prompt_api(server):
    """A few hundred generated prompts: values in and out of range, wrong-type links, missing inputs, unknown
    models. The server stays up and every prompt ends as success or as an error that carries a message."""
    import random

    rng = random.Random(1234)
    base = _pipeline_graph()
    choices = {
        ("1", "pipeline"): ["Sana_600M_1024px_diffusers", "nope", "../escape", "/etc/passwd", ""],
        ("1", "weight_dtype"): ["auto", "fp32", "bf16", "fp16", "int3"],
        ("4", "text"): ["", "a cat", "猫 🐱 مرحبا \x00\x07", "x" * 5000, 17],
        ("4", "use_chi"): [True, False, "yes"],
        ("4", "max_length"): [2, 300, 1, 5000, -3],
        ("6", "width"): [32, 96, 200, 256, 0, -64, 8224, "wide", 1.5],
        ("6", "height"): [32, 160, 256, 0, 9000],
        ("6", "batch_size"): [1, 2, 0, 65],
        ("6", "resolution_binning"): [True, False],
        ("7", "seed"): [0, 1, 2**64 - 1, 2**64, -1],
        ("7", "steps"): [1, 2, 3, 0, -1, 1001, "many"],
        ("7", "cfg"): [0.0, 1.0, 4.5, 100.0, 101.0, -1.0],
        ("7", "sampler"): ["flow_dpm_solver", "flow_euler", "euler_a"],
        ("7", "flow_shift"): [0.0, 3.0, 1e-9, -2.0],
        ("7", "pag_scale"): [0.0, 2.0, -1.0],
        ("7", "pag_layers"): ["8", "0-9", "99", "x", "", "3,"],
        ("7", "denoise"): [0.0, 0.5, 1.0, -0.5, 2.0],
        ("8", "tiling"): ["auto", "on", "off", "sideways"],
    }
    counts = {"success": 0, "validation_error": 0, "execution_error": 0}
    failures_then_success = False
    last_failed = False
    for i in range(200):
        prompt = copy.deepcopy(base)
        prompt["7"]["inputs"]["seed"] = i
        for (node, name), values in rng.sample(sorted(choices.items()), k=rng.randint(1, 3)):
            prompt[node]["inputs"][name] = rng.choice(values)
            if name == "pag_layers":  # layers only matter with PAG on
                prompt["7"]["inputs"]["pag_scale"] = 2.0
        r = rng.random()
        if r < 0.08:  # a wrong-type link
            prompt["7"]["inputs"][rng.choice(["latent", "positive", "model"])] = ["1", rng.choice([1, 2])]
        elif r < 0.14:  # a missing input
            node = rng.choice(["4", "6", "7", "8"])
            prompt[node]["inputs"].pop(rng.choice(sorted(prompt[node]["inputs"])))
        elif r < 0.17:  # a link to a node that does not exist, or an unknown node type
            prompt["8"]["inputs"]["samples"] = ["99", 0] if rng.random() < 0.5 else prompt["8"]["inputs"]["samples"]
            prompt["30"] = {"class_type": "SanaDoesNotExist", "inputs": {}}
        status, body = server.post("/prompt", {"prompt": prompt, "client_id": "fuzz"})
        if status != 200:
            assert status == 400 and (body.get("error", {}).get("message") or body.get("node_errors")), body
            counts["validation_error"] += 1
            continue
        hist = server.wait(body["prompt_id"], 300)
        if hist["status"]["status_str"] == "success":
            counts["success"] += 1
            failures_then_success |= last_failed
            last_failed = False
        else:
            errs = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"]
            assert errs and errs[0]["exception_message"].strip(), hist["status"]
            counts["execution_error"] += 1
            last_failed = True
        assert server.proc.poll() is None
    print(f"\nfuzz: {sum(counts.values())} prompts: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    assert server.get("/system_stats")  # still up
    assert all(counts.values()) and failures_then_success


def test_unload_models_reaches_ours(server):
    """POST /free with unload_models drops our patcher from the host's loaded models: the next run reloads it."""
    def loads() -> int:
        return server.log().count("Requested to load SanaBaseModel")

    assert server.run(_pipeline_graph(seed=41))["status"]["status_str"] == "success"
    before = loads()
    assert server.run(_pipeline_graph(seed=42))["status"]["status_str"] == "success"
    assert loads() == before  # still loaded: nothing to do
    assert server.post("/free", {"unload_models": True, "free_memory": True})[0] == 200
    # the prompt worker handles /free between prompts: after a prompt that loads no model, it surely has
    trivial = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
               "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "free/x"}}}
    assert server.run(trivial)["status"]["status_str"] == "success"
    assert server.run(_pipeline_graph(seed=43))["status"]["status_str"] == "success"
    assert loads() == before + 1


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_bin_routes_answer_as_the_node_computes(server, prefix):
    for w, h, res in [(1000, 1000, None), (1920, 1080, None), (200, 320, 1024), (512, 2048, 4096), (3000, 2000, 512)]:
        q = f"width={w}&height={h}&binning=true" + (f"&resolution={res}" if res else "")
        status, body = server.get_status(f"{prefix}/sana/bin?{q}")
        table = res or bins.table_for_size(h, w)
        assert status == 200 and body == {"valid": True, "binning": True, **bin_plan(w, h, True, res)}
        assert body["table"] == table and body["bin"] == list(bins.nearest_bin(h, w, table))
    assert server.get_status(f"{prefix}/sana/bin?width=640&height=480&binning=false")[1] == {
        "valid": True, "binning": False, "table": None, "bin": [480, 640], "latent": [15, 20], "crop": None}
    status, body = server.get_status(f"{prefix}/sana/bin?width=650&height=480&binning=false")
    assert status == 200 and not body["valid"] and "multiples of 32" in body["error"]
    status, body = server.get_status(f"{prefix}/sana/aspect?aspect=16:9&width=256&height=256&resolution=1024")
    assert status == 200 and body == aspect_size("16:9", 256, 256, 1024) == {"width": 1344, "height": 768,
                                                                            "table": 1024}
    for bad in ("bin?width=x&height=480", "bin?height=480", "bin?width=64&height=64&resolution=1000",
                "aspect?aspect=wide&width=64&height=64", "aspect?aspect=0:1&width=64&height=64"):
        status, body = server.get_status(f"{prefix}/sana/{bad}")
        assert status == 400 and body["error"], (bad, body)


def test_loaders_report_the_model_as_data(server):
    prompt = _pipeline_graph(seed=51)
    assert server.run(prompt)["status"]["status_str"] == "success"
    prompt["1"]["inputs"]["weight_dtype"] = "fp32"  # a loader that really runs: /history omits cached nodes' UI
    hist = server.run(prompt)
    assert hist["status"]["status_str"] == "success"
    ui = hist["outputs"]["1"]
    (model,) = ui["sana_model"]  # what the frontend reads; the text lines stay for people
    assert model["resolution"] == 1024 and model["params"] > 0
    assert ui["text"][0].startswith(f"{model['variant']} · 1024 px · {model['dtype']} · ")
    assert ui["text"][1].startswith("Gemma-2 · ") and ui["text"][2].startswith("DC-AE f32c32 · ")
