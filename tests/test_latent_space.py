"""One description of the latent space, read from the DC-AE: the published one is the f32c32 config's, and a DC-AE
whose config carries another scaling factor is honoured by the pipeline (as diffusers does) and by the nodes."""

import json
import shutil

import numpy as np
import pytest
import torch
from sana_comfy.nodes import NODES as N
from sana_comfy.sana_core import latent
from sana_comfy.sana_core.dcae_blocks import SANA_F32C32
from sana_comfy.sana_core.load.dcae import load_dcae
from sana_comfy.sana_core.load.text_encoder import load_text_encoder
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.pipeline import SampleOptions, text_to_image

FACTOR = 0.6
PROMPT = "a lighthouse on a cliff"


@pytest.fixture(scope="module")
def rescaled(tiny_repo, tmp_path_factory):
    """The tiny repo with its DC-AE's config saying scaling_factor 0.6."""
    repo = tmp_path_factory.mktemp("rescaled") / "repo"
    shutil.copytree(tiny_repo, repo)
    cfg = json.loads((repo / "vae" / "config.json").read_text())
    assert cfg["scaling_factor"] == latent.SANA.scaling_factor
    (repo / "vae" / "config.json").write_text(json.dumps({**cfg, "scaling_factor": FACTOR}))
    return repo


@pytest.mark.unit
def test_the_published_space_is_the_f32c32_configs(tiny_repo):
    assert SANA_F32C32.latent_space == latent.SANA == latent.LatentSpace(32, 32, 0.41407)
    assert load_dcae(tiny_repo, torch.float32).latent_space == latent.SANA


def _ours(repo, factor):
    model, te, vae = load_transformer(repo, "fp32"), load_text_encoder(repo, torch.float32), load_dcae(repo)
    assert vae.latent_space.scaling_factor == factor
    return text_to_image(model, te, vae, PROMPT, height=256, width=256, seed=2, opts=SampleOptions(steps=4),
                         lowercase=True)


@pytest.mark.parity
def test_the_pipeline_honours_the_dc_aes_scaling_factor(rescaled, tiny_repo):
    import diffusers

    pipe = diffusers.SanaPipeline.from_pretrained(rescaled, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    want = torch.from_numpy(np.asarray(pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(2),
                                            height=256, width=256, num_inference_steps=4, output_type="np").images))
    got, published = _ours(rescaled, FACTOR), _ours(tiny_repo, latent.SANA.scaling_factor)
    assert (got - want).abs().max().item() <= 1e-3
    assert (got - published).abs().max().item() > 0.05  # the factor changes the image


@pytest.mark.unit
def test_the_nodes_honour_the_dc_aes_scaling_factor(rescaled, models_dir):
    """A LATENT holds the published space's raw values (the host's latent format); a DC-AE with another factor
    decodes and encodes it in its own space."""
    shutil.copytree(rescaled / "vae", models_dir / "vae" / "rescaled")
    try:
        model = N["SanaLoadTransformer"].execute("Sana_600M_1024px_diffusers", "fp32").result[0]
        te = N["SanaLoadTextEncoder"].execute("gemma-2-2b-it", "fp32").result[0]
        vae = N["SanaLoadDCAE"].execute("rescaled", "fp32").result[0]
        pos = N["SanaEncodePrompt"].execute(te, PROMPT.lower(), True, 300)[0]
        neg = N["SanaEncodePrompt"].execute(te, "", False, 300)[0]
        empty = N["SanaEmptyLatent"].execute(256, 256, 1, True, model)[0]
        out = N["SanaSample"].execute(model, pos, neg, empty, seed=2, steps=4, cfg=4.5, sampler="flow_dpm_solver",
                                      flow_shift=0.0, pag_scale=0.0, pag_adaptive_scale=0.0, pag_layers="8",
                                      denoise=1.0)[0]
        img = N["SanaDecode"].execute(vae, out, "auto")[0]
        assert (img - _ours(rescaled, FACTOR)).abs().max().item() <= 1e-3
        back = N["SanaEncodeImage"].execute(vae, img)[0]["samples"]  # the published space again
        dcae = load_dcae(rescaled / "vae", torch.float32)
        raw = dcae.encode(img.permute(0, 3, 1, 2) * 2 - 1)
        assert torch.allclose(back, raw * FACTOR / latent.SANA.scaling_factor, atol=1e-5)
    finally:
        shutil.rmtree(models_dir / "vae" / "rescaled")
