"""Every node called directly, in-process against ComfyUI's own modules (no server): models in ComfyUI's model
folders, in the published layouts."""

import inspect
from types import SimpleNamespace

import pytest
import torch
from sana_comfy.nodes import NODES as N
from sana_comfy.nodes import host
from sana_comfy.nodes.host.routes import route_answer
from sana_comfy.sana_core import bins, pipeline
from sana_comfy.sana_core.bins import plan as bin_plan
from sana_comfy.sana_core.errors import SanaError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def models(models_dir):
    return models_dir


@pytest.fixture(scope="module")
def loaded(models):
    model = N["SanaLoadTransformer"].execute("Sana_600M_1024px_diffusers", "fp32").result[0]
    te = N["SanaLoadTextEncoder"].execute("gemma-2-2b-it", "auto").result[0]
    vae = N["SanaLoadDCAE"].execute("dc-ae-f32c32-sana-1.1-diffusers", "auto").result[0]
    return model, te, vae


def _options(node: str, name: str) -> list[str]:
    return N[node].INPUT_TYPES()["required"][name][1]["options"]


def _sample(model, pos, neg, latent, **kw):
    args = dict(seed=1, steps=3, cfg=4.5, sampler="flow_dpm_solver", flow_shift=0.0, pag_scale=0.0,
                pag_adaptive_scale=0.0, pag_layers="8", denoise=1.0)
    args.update(kw)
    return N["SanaSample"].execute(model, pos, neg, latent, **args)[0]


def test_model_lists_show_files_and_folders(models):
    (models / "diffusion_models" / "single.safetensors").write_bytes(b"")
    assert _options("SanaLoadTransformer", "model_name") == ["Sana_600M_1024px_diffusers", "single.safetensors"]
    assert _options("SanaLoadPipeline", "pipeline") == ["Sana_600M_1024px_diffusers"]
    (models / "diffusion_models" / "single.safetensors").unlink()


def test_text_to_image_through_nodes(loaded):
    model, te, vae = loaded
    pos = N["SanaEncodePrompt"].execute(te, "a red fox", True, 300)[0]
    neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
    assert pos[0][0].shape == (1, 300, 64) and pos[0][1]["attention_mask"].shape == (1, 300)
    latent = N["SanaEmptyLatent"].execute(200, 320, 2, True, model)[0]
    assert latent["samples"].shape == (2, 32, 40, 24)  # the 0.57 bin of the 1024 table: 1280x768
    out = _sample(model, pos, neg, latent)
    assert out is not latent and torch.equal(latent["samples"], torch.zeros_like(latent["samples"]))
    img = N["SanaDecode"].execute(vae, out, "auto")[0]
    assert img.shape == (2, 320, 200, 3) and 0 <= img.min() and img.max() <= 1 and img.std() > 0.01


def test_upscaled_latent_keeps_its_upscale(loaded):
    model, te, vae = loaded
    latent = N["SanaEmptyLatent"].execute(200, 320, 1, True, model)[0]
    up = dict(latent, samples=torch.nn.functional.interpolate(latent["samples"], scale_factor=1.5))
    img = N["SanaDecode"].execute(vae, up, "off")[0]
    assert img.shape == (1, 480, 300, 3)


def test_image_to_image_and_denoise_zero(loaded):
    model, te, vae = loaded
    pos = N["SanaEncodePrompt"].execute(te, "a red fox", True, 300)[0]
    image = torch.rand(1, 100, 70, 3)
    lat = N["SanaEncodeImage"].execute(vae, image)[0]
    assert lat["samples"].shape == (1, 32, 3, 2)
    same = _sample(model, pos, pos, lat, denoise=0.0)
    assert torch.equal(same["samples"], lat["samples"])
    part = _sample(model, pos, pos, lat, denoise=0.6)
    full = _sample(model, pos, pos, lat, denoise=1.0)
    assert not torch.allclose(part["samples"], full["samples"])


def test_pipeline_loader_and_pag(models):
    model, te, vae, native_vae = N["SanaLoadPipeline"].execute("Sana_600M_1024px_diffusers", "auto").result
    assert native_vae.first_stage_model is vae.module  # the VAE output: the same DC-AE as ComfyUI's VAE
    pos = N["SanaEncodePrompt"].execute(te, "a red fox", True, 300)[0]
    neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
    latent = N["SanaEmptyLatent"].execute(256, 256, 1, False)[0]
    a = _sample(model, pos, neg, latent, pag_scale=2.0, pag_layers="3,4")
    b = _sample(model, pos, neg, latent)
    assert not torch.allclose(a["samples"], b["samples"])
    with pytest.raises(SanaError, match=r"out of range.*0\.\.9"):
        _sample(model, pos, neg, latent, pag_scale=2.0, pag_layers="12")


def test_bad_latent_and_conditioning(loaded):
    model, te, _ = loaded
    pos = N["SanaEncodePrompt"].execute(te, "x", True, 300)[0]
    with pytest.raises(SanaError, match=r"4 channels.*\[B, 32, H/32, W/32\]"):
        _sample(model, pos, pos, {"samples": torch.zeros(1, 4, 64, 64)})
    wide = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(SanaError, match="768 wide; this Sana model expects 64"):
        _sample(model, wide, pos, {"samples": torch.zeros(1, 32, 8, 8)})


def test_model_names_cannot_escape_the_folders(models):
    for bad in ("../secret.safetensors", "/etc/passwd", "a/../../b"):
        with pytest.raises(SanaError, match="stay inside"):
            host.resolve_model("diffusion_models", bad)
    with pytest.raises(SanaError, match="not found"):
        host.resolve_model("vae", "missing.safetensors")


def test_int8_storage_through_the_loaders(models):
    model = N["SanaLoadTransformer"].execute("Sana_600M_1024px_diffusers", "int8").result[0]
    te = N["SanaLoadTextEncoder"].execute("gemma-2-2b-it", "int8").result[0]
    assert any(n.endswith("weight_scale") for n, _ in model.module.named_buffers())
    assert any(n.endswith("weight_scale") for n, _ in te.encoder.model.named_buffers())
    pos = N["SanaEncodePrompt"].execute(te, "a red fox", True, 300)[0]
    out = _sample(model, pos, pos, {"samples": torch.zeros(1, 32, 4, 4)})
    assert torch.isfinite(out["samples"]).all()


def test_the_extension_registers_every_node_and_changes_the_host_once():
    import asyncio

    import comfy.lora
    import comfy.samplers
    import sana_comfy
    from comfy_api.latest import ComfyExtension

    ext = asyncio.run(sana_comfy.comfy_entrypoint())
    assert isinstance(ext, ComfyExtension) and not hasattr(sana_comfy, "NODE_CLASS_MAPPINGS")
    keys = comfy.lora.model_lora_keys_unet
    asyncio.run(ext.on_load())
    nodes = asyncio.run(ext.get_node_list())
    assert [n.GET_SCHEMA().node_id for n in nodes] == list(N)
    assert comfy.samplers.KSAMPLER_NAMES.count(host.SAMPLER_NAME) == 1 and comfy.lora.model_lora_keys_unet is keys


@pytest.mark.parametrize("resolution", [None, 512, 1024, 2048, 4096])
def test_bin_plan_is_the_pipelines_binned_size(resolution):
    """The frontend's readout (bin_plan over GET /sana/bin) and a pipeline run pick the same bin: the nearest one
    of the model's table, or of the table nearest the requested area."""
    model = SimpleNamespace(cfg=SimpleNamespace(resolution=resolution)) if resolution else None
    for w in range(32, 4200, 232):
        for h in (32, 200, 320, 1000, 1080, 2048, 4096):
            plan = bin_plan(w, h, True, resolution)
            assert plan["bin"] == list(pipeline.binned_size(h, w, model, True)), (w, h)
            assert plan["bin"] == list(bins.nearest_bin(h, w, resolution or bins.table_for_size(h, w)))
            assert plan["latent"] == [plan["bin"][0] // 32, plan["bin"][1] // 32]
            assert plan["crop"] == (None if plan["bin"] == [h, w] else [h, w])
            assert plan["table"] == (resolution or bins.table_for_size(h, w))
    assert bin_plan(640, 480, False) == {"table": None, "bin": [480, 640], "latent": [15, 20], "crop": None}
    with pytest.raises(SanaError, match="multiples of 32"):
        bin_plan(650, 480, False)


def test_route_answers():
    assert route_answer("bin", {"width": "1920", "height": "1080"}) == (200, {
        "valid": True, "binning": True, "table": 1024, "bin": [768, 1344], "latent": [24, 42], "crop": [1080, 1920]})
    status, body = route_answer("bin", {"width": "650", "height": "480", "binning": "false"})
    assert status == 200 and body["valid"] is False and "multiples of 32" in body["error"]
    assert route_answer("aspect", {"aspect": "9:16", "width": "64", "height": "64", "resolution": "2048"}) == (
        200, {"width": 1536, "height": 2688, "table": 2048})
    for bad in ({"width": "1"}, {"width": "x", "height": "1"}, {"width": "64", "height": "64", "resolution": "999"}):
        assert route_answer("bin", bad)[0] == 400
    assert route_answer("aspect", {"aspect": "1:0", "width": "64", "height": "64"})[0] == 400


def test_loaders_report_the_model_as_data(models):
    out = N["SanaLoadTransformer"].execute("Sana_600M_1024px_diffusers", "fp32")
    (model,) = out.ui["sana_model"]
    assert model["resolution"] == 1024 and model["dtype"] == "float32"
    assert out.ui["text"][0].startswith(f"{model['variant']} · 1024 px · float32 · ")


def test_every_input_of_every_node_has_a_tooltip():
    missing = [(name, key) for name, cls in N.items()
               for section in cls.INPUT_TYPES().values() for key, spec in section.items()
               if len(spec) < 2 or not spec[1].get("tooltip")]
    assert not missing


def test_every_node_has_a_description_and_search_aliases():
    for name, cls in N.items():
        schema = cls.define_schema()
        assert len(schema.description) > 40, name
        assert getattr(schema, "search_aliases", None) in (None, []) or all(schema.search_aliases), name
    # the host's schema takes search aliases only on newer releases; they are given wherever it does
    from sana_comfy.nodes import widgets

    fake = widgets.schema("X", "X", "Sana", "d", [], [], aliases=("DiT",))
    assert getattr(fake, "search_aliases", ["DiT"]) == ["DiT"]


def test_display_names_are_found_by_plain_words():
    names = {cls.GET_SCHEMA().display_name for cls in N.values()}
    assert names >= {"Sana to MODEL", "Sana to VAE"} and all(name.isascii() for name in names)


@pytest.mark.parametrize("node,key,arg", [
    ("SanaLoadPipeline", "diffusers", "pipeline"), ("SanaLoadTransformer", "diffusion_models", "model_name"),
    ("SanaLoadTextEncoder", "text_encoders", "text_encoder"), ("SanaLoadDCAE", "vae", "vae_name"),
    ("SanaLoadControlNet", "controlnet", "control_net_name"), ("SanaLoraLoader", "loras", "lora_name"),
    ("SanaLoraLoaderModelOnly", "loras", "lora_name")])
def test_a_missing_model_file_names_its_folder_and_where_to_get_it(models_dir, node, key, arg):
    """A saved workflow naming a file this install lacks: the loader's validation says which models folder takes
    it (with its path) and which repository to get, instead of the host's bare 'not in list'."""
    from sana_comfy.nodes.widgets import FOLDERS

    cls = N[node]
    present = _options(node, arg)
    assert present and cls.validate_inputs(**{arg: present[0]}) is True
    message = cls.validate_inputs(**{arg: "Sana_missing_model"})
    assert isinstance(message, str) and "'Sana_missing_model'" in message
    assert f"models/{key}" in message and str(models_dir / key) in message
    repo = FOLDERS[key][1]
    assert repo is None or repo in message
    # the host passes inputs by the names the signature declares and checks every other combo against its list
    spec = inspect.getfullargspec(cls.validate_inputs)
    assert spec.args == ["cls", arg] and spec.varkw is None


def test_encode_prompt_clean_caption(models_dir, monkeypatch):
    """The optional clean_caption input comes after the existing ones; on, the node encodes the cleaned caption;
    without its packages it stops with the fix before loading anything."""
    from sana_comfy.sana_core.captions import clean

    inputs = N["SanaEncodePrompt"].INPUT_TYPES()
    assert list(inputs["optional"])[:2] == ["chi", "clean_caption"] and inputs["optional"]["clean_caption"][1][
        "default"] is False
    te = N["SanaLoadTextEncoder"].execute("gemma-2-2b-it", "auto").result[0]
    messy = "<b>A Red Fox</b> in the snow https://example.com/fox.jpg #wildlife @someone"
    on = N["SanaEncodePrompt"].execute(te, messy, True, 300, "", True)[0][0]
    want = N["SanaEncodePrompt"].execute(te, clean(messy), True, 300)[0][0]
    off = N["SanaEncodePrompt"].execute(te, messy, True, 300)[0][0]
    assert torch.equal(on[0], want[0]) and torch.equal(on[1]["attention_mask"], want[1]["attention_mask"])
    assert not torch.equal(on[1]["attention_mask"], off[1]["attention_mask"]) or not torch.equal(on[0], off[0])
    monkeypatch.setitem(__import__("sys").modules, "ftfy", None)
    with pytest.raises(SanaError, match=r"optional package 'ftfy'.*pip install beautifulsoup4 ftfy"):
        N["SanaEncodePrompt"].execute(te, messy, True, 300, "", True)


def test_encode_prompt_video_instruction_and_motion_score(models_dir):
    """instruction "video" prepends SANA-Video's instruction, motion_score appends " motion score: N." as the
    reference's examples do; the defaults (image, -1) encode as before the inputs existed."""
    from sana_comfy.sana_core.video import VIDEO_CHI

    inputs = N["SanaEncodePrompt"].INPUT_TYPES()["optional"]
    assert list(inputs)[2:] == ["instruction", "motion_score"]
    assert inputs["instruction"][1]["default"] == "image" and inputs["motion_score"][1]["default"] == -1
    te = N["SanaLoadTextEncoder"].execute("gemma-2-2b-it", "auto").result[0]
    got = N["SanaEncodePrompt"].execute(te, "a fox runs", True, 300, "", False, "video", 30)[0][0]
    emb, mask = te.get().encode(["a fox runs motion score: 30."], chi=VIDEO_CHI, max_length=300)
    assert torch.equal(got[0], emb) and torch.equal(got[1]["attention_mask"], mask)
    plain = N["SanaEncodePrompt"].execute(te, "a fox runs", True, 300)[0][0]
    default = N["SanaEncodePrompt"].execute(te, "a fox runs", True, 300, "", False, "image", -1)[0][0]
    assert torch.equal(plain[0], default[0]) and not torch.equal(plain[1]["attention_mask"], got[1]["attention_mask"])
