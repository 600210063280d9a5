"""Bad input gets one clear error naming the cause; no pickle code ever runs; no silent black image."""

import json
import pickle
import re
import sys

import pytest
import torch
from sana_comfy.nodes import NODES as N
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.transformer import load_transformer
from support import ROOT
from support.models import save_layouts, tiny_diffusers_transformer

pytestmark = pytest.mark.unit


class _Evil:
    """Unpickling this would create a file: the loader must refuse before any of it runs."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": {"x": _Evil(str(target))}}, f)
    torch.save({"state_dict": {"blocks.0.attn.qkv.weight": torch.zeros(3, 1), "hook": _Evil(str(target))}},
               tmp_path / "evil_zip.pth")
    for p in (bad, tmp_path / "evil_zip.pth"):
        with pytest.raises(SanaError, match=r"evil.*refused to load"):
            load_transformer(p)
    assert not target.exists()


def test_no_torch_load_without_weights_only():
    for f in list((ROOT / "sana_core").rglob("*.py")) + list((ROOT / "nodes").rglob("*.py")):
        for call in re.findall(r"torch\.load\([^)]*\)", f.read_text()):
            assert "weights_only=True" in call, f"{f}: {call}"


def test_sharded_index_naming_a_missing_shard(tmp_path):
    ref = tiny_diffusers_transformer()
    ref.save_pretrained(tmp_path / "m", max_shard_size="20KB")
    index = next((tmp_path / "m").glob("*.index.json"))
    shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[1]
    (tmp_path / "m" / shard).unlink()
    with pytest.raises(SanaError, match=rf"index\.json: names shard '{re.escape(shard)}', which is missing"):
        load_transformer(tmp_path / "m")


def test_sd15_like_checkpoint(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "v1-5-pruned.safetensors"
    save_file({"model.diffusion_model.input_blocks.1.1.proj_in.weight": torch.zeros(2, 2),
               "first_stage_model.encoder.conv_in.weight": torch.zeros(2, 2),
               "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(2)}, p)
    with pytest.raises(SanaError, match=r"v1-5-pruned\.safetensors: not a Sana transformer.*Stable Diffusion"):
        load_transformer(p)


def test_transformer_given_as_dcae(tmp_path):
    from sana_comfy.sana_core.load.dcae import load_dcae

    paths = save_layouts(tiny_diffusers_transformer(), tmp_path)
    with pytest.raises(SanaError, match="transformer"):
        load_dcae(paths["single_diffusers"])


# --- through the nodes (stand-in host) ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(pipeline_nodes):
    model, te, vae = pipeline_nodes
    pos = N["SanaEncodePrompt"].execute(te, "a lighthouse", True, 300)[0]
    neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
    return model, te, vae, pos, neg


def _sample(model, pos, neg, latent, **kw):
    args = dict(seed=1, steps=2, cfg=4.5, sampler="flow_dpm_solver", flow_shift=0.0, pag_scale=0.0,
                pag_adaptive_scale=0.0, pag_layers="8", denoise=1.0)
    args.update(kw)
    return N["SanaSample"].execute(model, pos, neg, latent, **args)[0]["samples"]


def _latent(b=1, h=2, w=2):
    return {"samples": torch.zeros(b, 32, h, w)}


def test_batch_broadcast_and_mismatch(loaded):
    model, te, _, pos, neg = loaded
    two = N["SanaEncodePrompt"].execute(te, "x", True, 300)[0]
    pair = [[torch.cat([pos[0][0], two[0][0]]), {"attention_mask": torch.cat([pos[0][1]["attention_mask"],
                                                                               two[0][1]["attention_mask"]])}]]
    out = _sample(model, pair, neg, _latent(2))  # negative of batch 1 broadcasts to the latent's 2
    assert out.shape[0] == 2
    single = _sample(model, pos, neg, _latent(1))
    assert torch.allclose(out[0], single[0], atol=1e-5)
    assert _sample(model, pair, neg, _latent(3)).shape[0] == 3  # ComfyUI's sampling repeats the prompts to the batch


@pytest.mark.parametrize("steps", [1, 1000])
def test_extreme_steps(loaded, steps):
    model, _, _, pos, neg = loaded
    out = _sample(model, pos, neg, _latent(1, 1, 1), steps=steps)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cfg", [0.0, 1.0, 100.0])
@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_extreme_cfg_and_seed(loaded, cfg, seed):
    model, _, _, pos, neg = loaded
    out = _sample(model, pos, neg, _latent(), cfg=cfg, seed=seed)
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_steps_zero_is_refused(loaded):
    model, _, _, pos, neg = loaded
    with pytest.raises(SanaError, match="steps must be at least 1, got 0"):
        _sample(model, pos, neg, _latent(), steps=0)


def test_same_seed_same_image_twice(loaded):
    model, _, vae, pos, neg = loaded
    a = N["SanaDecode"].execute(vae, {"samples": _sample(model, pos, neg, _latent(1, 4, 4), seed=5)}, "auto")[0]
    b = N["SanaDecode"].execute(vae, {"samples": _sample(model, pos, neg, _latent(1, 4, 4), seed=5)}, "auto")[0]
    assert torch.equal(a, b)


def test_nan_in_model_output_stops_with_the_step(loaded):
    model, _, _, pos, neg = loaded
    net = model.module
    saved = net.proj_out.bias.detach().clone()
    try:
        with torch.no_grad():
            net.proj_out.bias[0] = float("inf")
        with pytest.raises(SanaError, match=r"NaN/Inf at step 1 of 2.*computes in fp32: check the transformer's weights"):
            _sample(model, pos, neg, _latent())
    finally:
        with torch.no_grad():
            net.proj_out.bias.copy_(saved)


def test_nan_latent_is_not_decoded(loaded):
    *_, vae, _, _ = loaded
    bad = torch.zeros(1, 32, 2, 2)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(SanaError, match="NaN/Inf"):
        N["SanaDecode"].execute(vae, {"samples": bad}, "auto")


def test_text_encoder_nodes_name_the_fix_when_transformers_lacks_gemma2(monkeypatch):
    """Without a transformers that has Gemma-2, the other nodes work; the text encoder's say what to install."""
    import sana_comfy.sana_core

    monkeypatch.setitem(sys.modules, "sana_comfy.sana_core.text_encoder", None)  # as if its import failed
    monkeypatch.delattr(sana_comfy.sana_core, "text_encoder", raising=False)
    with pytest.raises(SanaError, match=r"could not be imported .*transformers>=4\.44.*pip install -r requirements"):
        N["SanaLoadTextEncoder"].execute("x", "auto")
