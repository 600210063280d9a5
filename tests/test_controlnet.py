"""The Sana ControlNet in ``sana_core`` (no host): every published layout loads the same weights; the model, the
transformer's injection and the whole pipeline equal diffusers' SanaControlNetModel / SanaControlNetPipeline; wrong
files and wrong sizes fail clearly. (Inside ComfyUI: test_controlnet_host.py.)"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sana_comfy.sana_core import caches
from sana_comfy.sana_core.controlnet import check_pair
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.controlnet import load_controlnet
from sana_comfy.sana_core.load.files import read_json
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.pipeline import SampleOptions, text_to_image
from support.controlnet import diffusers_controlnet_image, foreign_controlnet, save_controlnet, tiny_controlnet

PROMPT = "a small red house by a lake, watercolor"


@pytest.fixture(scope="module")
def pair(tiny_repo, tmp_path_factory):
    from diffusers import SanaTransformer2DModel

    net = SanaTransformer2DModel.from_pretrained(tiny_repo / "transformer")
    ref = tiny_controlnet(net, num_layers=2, seed=3)
    files = save_controlnet(ref, tmp_path_factory.mktemp("cn"), transformer=net)
    return ref, files


def _control_image(size=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    edges = (torch.rand(1, size // 16, size // 16, generator=g) > 0.7).float()
    return torch.nn.functional.interpolate(edges[None], size=(size, size))[0, 0][None, :, :, None].repeat(1, 1, 1, 3)


@pytest.mark.unit
def test_every_layout_loads_the_same_weights(pair):
    ref, files = pair
    config = read_json(files["folder"] / "config.json")
    want = {k: v for k, v in ref.state_dict().items()}
    for layout, path in files.items():
        got = load_controlnet(path, "fp32", config=None if layout == "folder" else config).state_dict()
        assert got.keys() == want.keys(), layout
        for k in want:
            assert torch.equal(got[k], want[k]), (layout, k)


@pytest.mark.parity
def test_controlnet_and_injection_equal_diffusers(pair, tiny_repo):
    """Our ControlNet's samples equal diffusers' on the same inputs, and the transformer adds them where diffusers
    does (sample k after block k + 1)."""
    from diffusers import SanaTransformer2DModel

    ref, files = pair
    ours = load_controlnet(files["folder"], "fp32")
    main_ref = SanaTransformer2DModel.from_pretrained(tiny_repo / "transformer").eval()
    main = load_transformer(tiny_repo, "fp32")
    g = torch.Generator().manual_seed(1)
    x, hint = torch.randn(2, 32, 6, 8, generator=g), torch.randn(2, 32, 6, 8, generator=g)
    y = torch.randn(2, 9, main.cfg.caption_channels, generator=g)
    mask, t = torch.ones(2, 9, dtype=torch.int64), torch.tensor([999.0, 499.0])
    mask[0, 4:] = 0
    with torch.no_grad():
        want = ref(x, encoder_hidden_states=y, timestep=t, controlnet_cond=hint, conditioning_scale=0.7,
                   encoder_attention_mask=mask, return_dict=False)[0]
        got = ours(x, t, y, hint, mask, 0.7)
        ours(x, t, y.clone(), hint, mask, 0.7)  # the caption's keys and values kept from here (speed layer)
        assert caches.peek(ours, "captions")[0].value is not None
        assert all(torch.equal(a, b) for a, b in zip(ours(x, t, y, hint, mask, 0.7), got))
        assert len(got) == len(want) == 2
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        want_v = main_ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t,
                          controlnet_block_samples=tuple(want), return_dict=False)[0]
        got_v = main(x, t, y, mask, control=got)
        plain = main(x, t, y, mask)
    torch.testing.assert_close(got_v, want_v, rtol=1e-5, atol=1e-5)
    assert (got_v - plain).abs().max() > 1e-3


@pytest.mark.parity
@pytest.mark.parametrize("scale", [0.7, 0.0])
def test_pipeline_equals_sana_controlnet_pipeline(pair, tiny_repo, scale):
    from sana_comfy.sana_core.load.dcae import load_dcae
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder

    ref, files = pair
    image = _control_image()
    want = diffusers_controlnet_image(tiny_repo, files["folder"], image, scale, prompt=PROMPT, seed=4,
                                      num_inference_steps=5)
    model, te, vae = load_transformer(tiny_repo, "fp32"), load_text_encoder(tiny_repo), load_dcae(tiny_repo / "vae")
    kw = dict(height=256, width=256, seed=4, binning=False, opts=SampleOptions(steps=5, cfg=4.5), lowercase=True)
    got = text_to_image(model, te, vae, PROMPT, controlnet=load_controlnet(files["nvlabs"], config=read_json(
        files["folder"] / "config.json")), control_image=image, control_scale=scale, **kw)
    want = torch.as_tensor(np.asarray(want)).reshape(got.shape)
    assert (got - want).abs().max().item() <= 1e-3
    plain = text_to_image(model, te, vae, PROMPT, **kw)
    if scale == 0:
        assert torch.equal(got, plain)
    else:
        assert (got - plain).abs().max().item() > 0.01  # the control shows


@pytest.mark.unit
@pytest.mark.parametrize("kind,says", [("sd15", "Stable Diffusion / SDXL ControlNet"),
                                       ("sdxl", "Stable Diffusion / SDXL ControlNet"), ("flux", "Flux ControlNet")])
def test_another_familys_controlnet_is_named(tmp_path, kind, says):
    path = tmp_path / f"{kind}_controlnet.safetensors"
    save_file(foreign_controlnet(kind), path)
    with pytest.raises(SanaError, match=rf"{kind}_controlnet\.safetensors: not a Sana ControlNet: this is an? {says}"):
        load_controlnet(path)


@pytest.mark.unit
def test_a_controlnet_is_not_a_transformer_and_sizes_must_fit(pair, tiny_repo):
    ref, files = pair
    with pytest.raises(SanaError, match="a Sana ControlNet, load it with Sana Load ControlNet"):
        load_transformer(files["single"])
    from sana_comfy.sana_core.transformer import SanaConfig, SanaTransformer
    from support.pipeline import TINY_TRANSFORMER

    cn = load_controlnet(files["folder"])
    wide = SanaTransformer(SanaConfig(num_layers=4, num_heads=4, head_dim=32, cross_heads=4, cross_head_dim=32,
                                      caption_channels=TINY_TRANSFORMER["caption_channels"]), device="meta")
    with pytest.raises(SanaError, match=r"hidden size 16 .*has 128"):
        check_pair(cn, wide)
