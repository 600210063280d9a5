"""Host-managed layers inside ComfyUI (its modules in a child Python, support/host_memory_probe.py): the models built
from the host's layers equal the reference; partly loaded (the memory budget forced small through the host's loading
API) they give the fully loaded latent and image, with a LoRA applied per call and with fp8 storage."""

import json
import subprocess
import sys

import pytest
import torch
from support import ROOT
from support.comfy_server import comfy_dir
from support.lora import peft_lora, save_layout
from support.pipeline import wide_transformer

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not (comfy_dir() / "main.py").exists(),
                                                   reason="ComfyUI not installed: run scripts/setup_env.sh")]


@pytest.fixture(scope="module")
def report(host_base):
    base = host_base("hostmem")
    models = base / "models"
    # wide enough (layers ≥ 4096 weights) that fp8 storage takes the layers, with a LoRA of its own
    wide = wide_transformer()
    wide.save_pretrained(models / "diffusion_models" / "Sana_wide_diffusers")
    save_layout(peft_lora(wide, rank=4, seed=8, std=0.5), models / "loras" / "wide_peft.safetensors", "peft", alpha=8.0)
    out = base / "report.json"
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "host_memory_probe.py"), str(models), str(out),
                          str(comfy_dir())], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


def test_host_layers_equal_the_reference(report):
    """Built from the host's comfy.ops layers (and Sana's RMSNorm made castable), every model computes what the
    reference layers compute, in fp32."""
    assert {"Linear", "Conv2d", "RMSNorm"} <= set(report["ops_types"])
    for key in ("ops_transformer", "ops_controlnet", "ops_dcae_decode", "ops_dcae_encode"):
        assert report[key] <= 1e-6, (key, report[key])


@pytest.mark.parametrize("case", ["partial", "partial_lora", "partial_fp8", "partial_fp8_lora", "partial_video"])
def test_partly_loaded_model_gives_the_fully_loaded_latent(report, case):
    """With a budget of 30 % of the model, the host loads it partly: some layers stay off the device and are cast
    per call (a LoRA's patches applied per call too; 8-bit layers widened per call) — the same latent."""
    r = report[case]
    assert r["lowvram"] and r["cast_partial"] > 0, r
    assert r["diff"] <= 1e-5 * max(1.0, r.get("scale", 1.0)), r
    if "fp8" in case:
        assert r["quant_cast"] > 0, r


def test_a_lora_acts_on_partly_loaded_layers(report):
    assert report["partial_lora"]["lora_effect"] > 1e-3
    assert report["fp8_lora_effect"] > 1e-3


def test_partly_loaded_dcae_gives_the_same_image(report):
    r = report["partial_vae"]
    assert r["lowvram"] and r["cast_partial"] > 0, r
    assert r["diff"] <= 1e-5, r


def test_fp8_latent_is_finite(report):
    assert torch.isfinite(torch.tensor(report["partial_fp8_latent"])).all()
