"""GET /sana/model, answered in-process (no server): a loader's variant and training resolution read off its files
(config.json, tensor names and shapes) are what the loader itself will report, and what cannot be read says so."""

import json

import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.nodes.host.routes import route_answer
from sana_comfy.sana_core.load.transformer import load_transformer, peek_config, variant_name
from support.inprocess import models_at
from support.models import tiny_diffusers_transformer

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder: a 2048 px transformer folder, a repo holding it (with a scheduler's flow shift), an NVlabs
    single file of the 0.6B's widths (one block, its training resolution only in pos_embed), and two bad files."""
    root = tmp_path_factory.mktemp("route_models")
    net = tiny_diffusers_transformer(sample_size=64)
    net.save_pretrained(root / "diffusion_models" / "tiny_folder")
    repo = root / "diffusers" / "tiny_repo"
    net.save_pretrained(repo / "transformer")
    (repo / "scheduler").mkdir()
    (repo / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 4.0}))
    d, z = 1152, lambda *s: torch.zeros(*s, dtype=torch.bfloat16)
    save_file({"x_embedder.proj.weight": z(d, 32, 1, 1), "y_embedder.y_proj.fc1.weight": z(d, 2304),
               "final_layer.linear.weight": z(32, d), "blocks.0.attn.qkv.weight": z(3 * d, d),
               "blocks.0.cross_attn.kv_linear.weight": z(2 * d, d), "blocks.0.mlp.point_conv.conv.weight": z(d, 2880, 1, 1),
               "pos_embed": z(1, 64 * 64, d)}, root / "diffusion_models" / "nvlabs_single.safetensors")
    save_file({"encoder.conv_in.weight": z(8, 3, 3, 3), "decoder.conv_in.weight": z(8, 32, 3, 3)},
              root / "diffusion_models" / "a_vae.safetensors")
    (root / "diffusion_models" / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    return root


def _ask(models, loader, name):
    with models_at(models):
        return route_answer("model", {"loader": loader, "name": name})


@pytest.mark.parametrize("loader,name", [("SanaLoadTransformer", "tiny_folder"), ("SanaLoadPipeline", "tiny_repo")])
def test_model_route_is_what_the_loader_builds(models, loader, name):
    folder = {"SanaLoadTransformer": "diffusion_models", "SanaLoadPipeline": "diffusers"}[loader]
    cfg = load_transformer(models / folder / name).cfg
    assert peek_config(models / folder / name) == cfg
    assert cfg.resolution == 2048 and cfg.flow_shift == (4.0 if loader == "SanaLoadPipeline" else 3.0)
    assert _ask(models, loader, name) == (200, {
        "known": True, "variant": variant_name(cfg), "resolution": 2048, "video": False})


def test_model_route_reads_a_single_files_resolution_off_its_shapes(models):
    status, body = _ask(models, "SanaLoadTransformer", "nvlabs_single.safetensors")
    assert status == 200 and body == {"known": True, "variant": "Sana (custom: 1 layers, hidden 1152)",
                                      "resolution": 2048, "video": False}


@pytest.mark.parametrize("name,why", [
    ("missing.safetensors", "not found"), ("../escape", "stay inside"), ("a_vae.safetensors", "DC-AE"),
    ("truncated.safetensors", "safetensors")])
def test_model_route_says_when_the_files_cannot_tell(models, name, why):
    status, body = _ask(models, "SanaLoadTransformer", name)
    assert status == 200 and body["known"] is False and why in body["error"], body


def test_model_route_tells_a_sana_video_model(video_repo, tmp_path):
    from sana_comfy.sana_core.load import load_video_transformer

    (tmp_path / "diffusers").mkdir()
    (tmp_path / "diffusers" / "video").symlink_to(video_repo)
    cfg = load_video_transformer(video_repo).cfg
    assert _ask(tmp_path, "SanaLoadPipeline", "video") == (200, {
        "known": True, "variant": "SANA-Video 3×24 480p", "resolution": 480, "video": True})
    assert cfg.flow_shift == 8.0 and cfg.resolution == 480


def test_model_route_refuses_other_loaders_and_missing_names():
    for query in ({"loader": "SanaLoadDCAE", "name": "x"}, {"loader": "SanaLoadTransformer"}, {}):
        status, body = route_answer("model", query)
        assert status == 400 and "loader=" in body["error"], body
