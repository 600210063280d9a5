"""Sana-Sprint image-to-image: ``denoise`` < 1 gives diffusers' SanaSprintImg2ImgPipeline at that strength."""

import numpy as np
import pytest
import torch
from sana_comfy.sana_core.guidance import TextCond
from sana_comfy.sana_core.load.dcae import load_dcae
from sana_comfy.sana_core.load.text_encoder import load_text_encoder
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.pipeline import SampleOptions, decode_images, denoise, encode_images
from sana_comfy.sana_core.sampling import sprint_trig_times

PROMPT = "A small red house by a lake, watercolor"
H, W = 256, 320


@pytest.fixture(scope="module")
def image():
    """A smooth input image (1, H, W, 3) in 0..1."""
    g = torch.Generator().manual_seed(7)
    small = torch.rand(1, 3, H // 32, W // 32, generator=g)
    return torch.nn.functional.interpolate(small, size=(H, W), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def _ref(repo, image, seed, steps, strength):
    import diffusers

    pipe = diffusers.SanaSprintImg2ImgPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPT, image=image.permute(0, 3, 1, 2), strength=strength, num_inference_steps=steps,
               guidance_scale=4.5, height=H, width=W, use_resolution_binning=False, output_type="np",
               generator=torch.Generator("cpu").manual_seed(seed),
               **({} if steps == 2 else {"intermediate_timesteps": None}))
    return torch.from_numpy(np.asarray(out.images))


@pytest.mark.parity
@pytest.mark.parametrize("steps,strength", [(2, 0.6), (4, 0.5), (3, 0.34)])
def test_img2img_matches_sana_sprint_img2img_pipeline(sprint_repo, image, steps, strength):
    model, te = load_transformer(sprint_repo, "fp32"), load_text_encoder(sprint_repo, torch.float32)
    vae = load_dcae(sprint_repo)
    want = _ref(sprint_repo, image, 13, steps, strength)
    pos = TextCond(*te.encode([PROMPT], lowercase=True))
    opts = SampleOptions(steps=steps, cfg=4.5, denoise=strength)
    got = decode_images(vae, denoise(model, pos, None, encode_images(vae, image), 13, opts))
    full = decode_images(vae, denoise(model, pos, None, encode_images(vae, image), 13,
                                      SampleOptions(steps=steps, cfg=4.5)))
    assert got.shape == want.shape == (1, H, W, 3)
    assert want.std() > 0.02
    assert (got - want).abs().max().item() <= 1e-3
    if steps > 2:  # starting part-way down keeps the input's trace; at 2 steps the start is still ~pure noise
        assert (got - full).abs().max().item() > 1e-2


@pytest.mark.unit
def test_trig_times_skip_like_strength():
    full = sprint_trig_times(4, intermediate=None)
    assert torch.equal(sprint_trig_times(4, intermediate=None, denoise=0.5), full[2:])
    assert torch.equal(sprint_trig_times(2, denoise=0.6), sprint_trig_times(2))
    assert len(sprint_trig_times(4, intermediate=None, denoise=1e-6)) == 2  # at least one step
