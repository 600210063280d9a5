"""End to end: a tiny pipeline saved by diffusers, loaded by sana_core, gives diffusers' images."""

import numpy as np
import pytest
import torch
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.dcae import load_dcae
from sana_comfy.sana_core.load.text_encoder import load_text_encoder
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.pipeline import SampleOptions, text_to_image

PROMPT = "a small red house by a lake, watercolor"


@pytest.fixture(scope="module")
def repo(tiny_repo):
    return tiny_repo


@pytest.fixture(scope="module")
def ours(repo):
    return load_transformer(repo, "fp32"), load_text_encoder(repo, torch.float32), load_dcae(repo, torch.float32)


def _ref(repo, cls_name, **kw):
    import diffusers

    layers = kw.pop("pag_applied_layers", None)
    extra = {"pag_applied_layers": layers} if layers else {}
    pipe = getattr(diffusers, cls_name).from_pretrained(repo, torch_dtype=torch.float32, **extra)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPT, generator=torch.Generator("cpu").manual_seed(kw.pop("seed")), output_type="np", **kw)
    return torch.from_numpy(np.asarray(out.images))


@pytest.mark.parity
@pytest.mark.parametrize("binning,size", [(True, (320, 200)), (False, (256, 192))])
def test_text_to_image_matches_sana_pipeline(repo, ours, binning, size):
    h, w = size
    want = _ref(repo, "SanaPipeline", seed=3, height=h, width=w, num_inference_steps=6, guidance_scale=4.5,
                use_resolution_binning=binning)
    model, te, vae = ours
    got = text_to_image(model, te, vae, PROMPT, height=h, width=w, seed=3, binning=binning,
                        opts=SampleOptions(steps=6, cfg=4.5), lowercase=True)
    assert got.shape == want.shape == (1, h, w, 3)
    assert want.std() > 0.02  # a real image, not a flat one
    assert (got - want).abs().max().item() <= 1e-3


@pytest.mark.parity
@pytest.mark.parametrize("cfg", [4.5, 1.0])
def test_pag_matches_sana_pag_pipeline(repo, ours, cfg):
    want = _ref(repo, "SanaPAGPipeline", seed=5, height=256, width=256, num_inference_steps=5, guidance_scale=cfg,
                pag_scale=2.0, pag_applied_layers=["transformer_blocks.8"])
    model, te, vae = ours
    got = text_to_image(model, te, vae, PROMPT, height=256, width=256, seed=5,
                        opts=SampleOptions(steps=5, cfg=cfg, pag_scale=2.0, pag_layers="8"), lowercase=True)
    plain = text_to_image(model, te, vae, PROMPT, height=256, width=256, seed=5,
                          opts=SampleOptions(steps=5, cfg=cfg), lowercase=True)
    assert (got - want).abs().max().item() <= 1e-3
    assert (got - plain).abs().max().item() > 1e-3  # PAG changes the image


@pytest.mark.unit
def test_batch_item_zero_equals_single(ours):
    model, te, vae = ours
    one = text_to_image(model, te, vae, PROMPT, height=256, width=256, seed=9, opts=SampleOptions(steps=3))
    two = text_to_image(model, te, vae, PROMPT, height=256, width=256, seed=9, opts=SampleOptions(steps=3),
                        batch_size=2)
    assert two.shape[0] == 2 and torch.allclose(two[0], one[0], atol=1e-5)
    assert not torch.allclose(two[0], two[1], atol=1e-3)


@pytest.mark.unit
def test_size_not_multiple_of_32(ours):
    model, te, vae = ours
    with pytest.raises(SanaError, match=r"1000x1000 must be positive multiples of 32"):
        text_to_image(model, te, vae, PROMPT, height=1000, width=1000, binning=False, opts=SampleOptions(steps=1))


@pytest.mark.parity
def test_sprint_matches_sana_sprint_pipeline(sprint_repo):
    model, te = load_transformer(sprint_repo, "fp32"), load_text_encoder(sprint_repo, torch.float32)
    vae = load_dcae(sprint_repo)
    assert model.cfg.guidance_embeds and model.cfg.qk_norm
    for steps in (2, 3):
        want = _ref(sprint_repo, "SanaSprintPipeline", seed=11, height=256, width=320, num_inference_steps=steps,
                    guidance_scale=4.5, **({} if steps == 2 else {"intermediate_timesteps": None}))
        got = text_to_image(model, te, vae, PROMPT, height=256, width=320, seed=11,
                            opts=SampleOptions(steps=steps, cfg=4.5), lowercase=True)
        assert want.std() > 0.02
        assert (got - want).abs().max().item() <= 1e-3


@pytest.mark.unit
def test_the_readmes_script_example_runs(tiny_repo, tmp_path):
    """README, "Using sana_core without ComfyUI": its code, run as a script on the tiny repo, makes an image of the
    asked size."""
    import subprocess
    import sys

    from support import ROOT

    text = (ROOT / "README.md").read_text()
    code = text.split("## Using `sana_core` without ComfyUI", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert '"models/diffusers/Sana_600M_1024px_diffusers"' in code and "text_to_image" in code
    code = code.replace('"models/diffusers/Sana_600M_1024px_diffusers"', repr(str(tiny_repo)))
    script = tmp_path / "example.py"
    script.write_text(code.replace("torch.bfloat16", "torch.float32")
                      + "print(tuple(image.shape), float(image.min()), float(image.max()), float(image.std()))\n")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         capture_output=True, text=True, timeout=600)  # outside ComfyUI: sana_core alone
    assert out.returncode == 0, out.stderr[-3000:]
    shape, low, high, std = out.stdout.strip().splitlines()[-1].rsplit(" ", 3)
    assert shape == "(1, 1024, 1024, 3)" and 0 <= float(low) and float(high) <= 1 and float(std) > 0.01
