"""Real-host tests: a real ComfyUI 0.3.75 on CPU, this package linked into custom_nodes, tiny weights in its model
folders, driven over HTTP and its websocket."""

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_server import ROOT, ComfyServer, WsListener, comfy_dir
from fixtures_pipeline import build_tiny_repo, install_model_folders
from PIL import Image

pytestmark = pytest.mark.skipif(not (comfy_dir() / "main.py").exists(),
                                reason="ComfyUI not installed: run scripts/setup_env.sh")
WORKFLOWS = sorted((ROOT / "example_workflows" / "api").glob("*.json"))
NODES = {
    "SanaLoadTextEncoder": (["text_encoder", "dtype"], ["SANA_TEXT_ENCODER"]),
    "SanaEncodePrompt": (["text_encoder", "text", "use_chi", "max_length"], ["CONDITIONING"]),
    "SanaLoadTransformer": (["model_name", "weight_dtype"], ["SANA_MODEL"]),
    "SanaLoadDCAE": (["vae_name", "dtype"], ["SANA_VAE"]),
    "SanaLoadPipeline": (["pipeline", "weight_dtype"], ["SANA_MODEL", "SANA_TEXT_ENCODER", "SANA_VAE"]),
    "SanaEmptyLatent": (["width", "height", "batch_size", "resolution_binning"], ["LATENT"]),
    "SanaSample": (["model", "positive", "negative", "latent", "seed", "steps", "cfg", "sampler", "flow_shift",
                    "pag_scale", "pag_adaptive_scale", "pag_layers", "denoise"], ["LATENT"]),
    "SanaDecode": (["vae", "samples", "tiling"], ["IMAGE"]),
    "SanaEncodeImage": (["vae", "image"], ["LATENT"]),
}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return build_tiny_repo(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_repo):
    base = tmp_path_factory.mktemp("comfy")
    install_model_folders(tiny_repo, base / "models")
    (base / "input").mkdir()
    grad = np.linspace(0, 255, 256, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(grad, (256, 1)), np.tile(grad[:, None], (1, 256)),
                              np.full((256, 256), 90, np.uint8)], -1)).save(base / "input" / "sana_example_input.png")
    srv = ComfyServer(base)
    yield srv
    srv.stop()


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
    assert info["SanaLoadTransformer"]["input"]["required"]["model_name"][0] == ["Sana_600M_1024px_diffusers"]
    assert info["SanaLoadTextEncoder"]["input"]["required"]["text_encoder"][0] == ["gemma-2-2b-it"]
    assert "dc-ae-f32c32-sana-1.1-diffusers" in info["SanaLoadDCAE"]["input"]["required"]["vae_name"][0]


@pytest.mark.parametrize("wf", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_example_workflow_runs(server, wf):
    hist = server.run(_load(wf))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + server.log()[-3000:]
    imgs = _images(server, hist)
    want = (256, 256) if "image_to_image" in wf.stem else (1024, 1024)
    assert imgs and all(i.shape[:2] == want for i in imgs)
    assert all(i.std() > 2 for i in imgs)  # not a flat (black/grey) image


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
        end = time.time() + 120
        while time.time() < end and not [e for e in ws.of_type("progress") if e["node"] == "7" and e["value"] >= 3]:
            time.sleep(0.05)
        progress = [e for e in ws.of_type("progress") if e["node"] == "7"]
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
