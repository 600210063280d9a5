"""CUDA-graph replay of the transformer (sana_core/speed/cudagraph.py): the replayed step equals the eager one, new
inputs and moved, replaced or edited weights are honoured, and graphs are only used where they are safe. Needs a GPU;
the CPU checks at the end run everywhere."""

import pytest
import torch
from sana_comfy.sana_core import caches, pipeline, speed
from sana_comfy.sana_core.guidance import TextCond
from sana_comfy.sana_core.speed import policy
from sana_comfy.sana_core.speed.cudagraph import GraphCache
from sana_comfy.sana_core.transformer import SanaConfig, SanaTransformer

pytestmark = pytest.mark.unit

CFG = SanaConfig(num_layers=4, num_heads=2, head_dim=16, cross_heads=2, cross_head_dim=16, caption_channels=48,
                 sample_size=8)


def _random(m: torch.nn.Module, dim: int) -> torch.nn.Module:
    """Random weights (norm scales of the hidden size near 1), the speed forms on."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.05 + (1.0 if p.ndim == 1 and p.shape[0] == dim else 0.0))
    return speed.apply(m.eval().requires_grad_(False), True)


def _model(device: str, cfg: SanaConfig = CFG) -> SanaTransformer:
    torch.manual_seed(0)
    return _random(SanaTransformer(cfg, device=device, dtype=torch.float32), cfg.dim)


def _inputs(device: str, batch: int = 2, hw=(8, 6), seed: int = 1, length: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 32, *hw, generator=g)
    t = torch.rand(batch, generator=g) * 1000
    y = torch.randn(batch, length, CFG.caption_channels, generator=g)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, 4:] = 0
    return [v.to(device) for v in (x, t, y, mask)]


def _eager(m, *a, **kw):
    with policy.forced(cuda_graphs=False):
        return m(*a, **kw)


CAPTURED: list[int] = []  # one entry per graph captured in the running test (each test uses one model)


@pytest.fixture(autouse=True)
def count_captures(monkeypatch):
    capture = GraphCache._capture

    def counted(self, *args):
        entry = capture(self, *args)
        CAPTURED.append(1)
        return entry

    monkeypatch.setattr(GraphCache, "_capture", counted)
    CAPTURED.clear()


def captures() -> int:
    return len(CAPTURED)


@pytest.mark.gpu
def test_replay_equals_eager_and_follows_new_inputs():
    m = _model("cuda")
    with torch.no_grad():
        for seed in (1, 2, 3, 4):  # eager, capture, then replays with other values
            a = _inputs("cuda", seed=seed)
            got, want = m(*a), _eager(m, *a)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert captures() == 1
        out1 = m(*_inputs("cuda", seed=1))
        m(*_inputs("cuda", seed=2))
        torch.testing.assert_close(out1, _eager(m, *_inputs("cuda", seed=1)))  # a returned output is never overwritten
        other = _inputs("cuda", batch=3, hw=(4, 4))
        m(*other)  # another signature: a one-off call stays eager ...
        assert captures() == 1
        torch.testing.assert_close(m(*other), _eager(m, *other), rtol=1e-5, atol=1e-6)  # ... a second is captured
        assert captures() == 2 and len(m._graphs()) == 2


@pytest.mark.gpu
def test_pag_layout_and_inference_mode():
    m = _model("cuda")
    a = _inputs("cuda", batch=3)
    pag = dict(identity_blocks=frozenset({1, 2}), n_identity=1)
    with torch.inference_mode():
        for _ in range(3):
            got, plain = m(*a, **pag), m(*a)
        want = _eager(m, *a, **pag)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (got - plain).abs().max() > 1e-4  # the perturbed layout is its own graph, not the plain one replayed
    assert captures() == 2


@pytest.mark.gpu
def test_moved_or_replaced_weights_are_recaptured():
    m = _model("cuda")
    a = _inputs("cuda")
    with torch.no_grad():
        m(*a), m(*a)
        assert captures() == 1
        blk = m.transformer_blocks[1].attn1.to_v
        blk.weight = torch.nn.Parameter(blk.weight * 3, requires_grad=False)  # as a host patching weights does
        for _ in range(2):
            torch.testing.assert_close(m(*a), _eager(m, *a), rtol=1e-5, atol=1e-6)
        assert captures() == 2
        m.to("cpu")
        assert len(m._graphs()) == 0  # moving the model drops every graph
        m.to("cuda")
        for _ in range(2):
            torch.testing.assert_close(m(*a), _eager(m, *a), rtol=1e-5, atol=1e-6)
        assert captures() == 3


@pytest.mark.gpu
def test_graphs_stay_off_where_unsafe(monkeypatch):
    m = _model("cuda")
    a = _inputs("cuda")
    m(*a), m(*a)  # autograd on: eager
    assert captures() == 0
    speed.apply(m, False)  # the switch
    with torch.no_grad():
        m(*a), m(*a)
    assert captures() == 0


@pytest.mark.gpu
def test_text_encoder_replays_gemma(tiny_gemma, monkeypatch):
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder

    enc = load_text_encoder(tiny_gemma.sana_repo).to("cuda")
    prompts = ["a red fox in the snow", "a lighthouse at dusk"]
    window = enc.model.config.sliding_window  # the tiny Gemma's window is short; the 2B's is 4096
    got = [enc.encode([p], chi=None, max_length=window) for p in prompts + prompts]  # check, eager, capture, replay
    assert captures() == 1
    speed.apply(enc, False)
    want = [enc.encode([p], chi=None, max_length=window) for p in prompts + prompts]
    assert captures() == 1
    for (e, m), (we, wm) in zip(got, want):
        torch.testing.assert_close(e, we, rtol=1e-5, atol=1e-6)
        assert torch.equal(m, wm)


@pytest.mark.gpu
def test_switching_block_forms_is_not_served_a_stale_graph():
    m = _model("cuda")
    a = _inputs("cuda")
    with torch.no_grad():
        fused = [m(*a) for _ in range(3)]
        with policy.forced(fused_blocks=False):
            plain = [m(*a) for _ in range(3)]
            want = _eager(m, *a)
    assert captures() == 2
    torch.testing.assert_close(plain[-1], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused[-1], want, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fused[-1], plain[-1])


@pytest.mark.gpu
def test_nan_on_the_gpu_names_its_step():
    from sana_comfy.sana_core.errors import SanaError
    from sana_comfy.sana_core.sampling import make_schedule, sample

    calls = []

    def model_fn(x, t):
        calls.append(1)
        return torch.full_like(x, float("nan")) if len(calls) == 3 else x * 0.1

    with pytest.raises(SanaError, match="step 3 of 6"):
        sample("flow_dpm_solver", model_fn, torch.randn(1, 32, 4, 4, device="cuda"),
               make_schedule("flow_dpm_solver", 6, 3.0))


@pytest.mark.gpu
def test_denoise_on_the_gpu_matches_eager():
    m = _model("cuda")
    g = torch.Generator().manual_seed(3)
    pos = TextCond(torch.randn(1, 10, CFG.caption_channels, generator=g), torch.ones(1, 10, dtype=torch.int64))
    neg = TextCond(torch.randn(1, 7, CFG.caption_channels, generator=g), torch.ones(1, 7, dtype=torch.int64))
    latent = torch.zeros(1, 32, 8, 8)
    opts = pipeline.SampleOptions(steps=6, cfg=4.5, pag_scale=2.0, pag_layers="1")
    got = pipeline.denoise(m, pos, neg, latent, seed=5, opts=opts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(policy, "cuda_graphs", lambda x: False)
        want = pipeline.denoise(m, pos, neg, latent, seed=5, opts=opts)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_cpu_never_captures():
    m = _model("cpu")
    with torch.no_grad():
        a = _inputs("cpu")
        assert not policy.cuda_graphs(a[0])
        torch.testing.assert_close(m(*a), _eager(m, *a), rtol=0, atol=0)
    assert captures() == 0


def test_ready_made_masks_give_gemmas_own_output(tiny_gemma):
    """The form the Gemma graph takes (masks built outside the model) equals the model's own masking, padding
    included; checked here on the CPU, and on a GPU once per shape before any capture."""
    from sana_comfy.sana_core.load.text_encoder import load_text_encoder
    from sana_comfy.sana_core.speed.text_encoder import _additive_mask

    enc = load_text_encoder(tiny_gemma.sana_repo)
    window = enc.model.config.sliding_window  # the graph form is used up to Gemma's window (4096 in the 2B)
    tok = enc.tokenizer(["a red fox in the snow", "a lighthouse"], padding="max_length", max_length=window,
                        truncation=True, return_tensors="pt")
    ids, mask = tok.input_ids, tok.attention_mask
    assert (mask == 0).any()  # padding is present
    with torch.no_grad():
        want = enc._forward(ids, mask)  # on the CPU: the reference forward
        got = enc._forward_masks(ids, _additive_mask(mask, enc.dtype))
    assert torch.equal(got, want)


@pytest.mark.gpu
def test_held_caption_on_the_gpu():
    """A context passed again replays through the graph (which computes its keys and values itself), and runs
    eagerly with its kept keys and values."""
    m = _model("cuda")
    x, t, y, mask = _inputs("cuda")
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(m(x, t, y, mask), _eager(m, x, t, y.clone(), mask), rtol=1e-5, atol=1e-6)
        assert captures() == 1
        for _ in range(2):
            torch.testing.assert_close(_eager(m, x, t, y, mask), _eager(m, x, t, y.clone(), mask), rtol=0, atol=0)
        assert caches.peek(m, "captions")[0].holds(y) and caches.peek(m, "captions")[0].value is not None


@pytest.mark.gpu
@pytest.mark.parametrize("edit", ["in place under inference_mode", "parameter replaced"])
def test_graphs_see_edited_weights(edit):
    """A replay reads the weights' memory: an in-place edit reaches it without a recapture; a replaced parameter
    (a patcher's way) is recaptured."""
    with torch.inference_mode():
        m = _model("cuda")
        a = _inputs("cuda")
        m(*a), m(*a)
        before = m(*a)
        lin = m.transformer_blocks[1].ff.conv_point
        if edit == "parameter replaced":
            lin.weight = torch.nn.Parameter(lin.weight * 3, requires_grad=False)
        else:
            lin.weight.mul_(3)
        got = [m(*a) for _ in range(2)]
        want = _eager(m, *a)
    assert not torch.allclose(before, want, atol=1e-3)
    torch.testing.assert_close(got[-1], want, rtol=1e-5, atol=1e-6)
    assert captures() == (2 if edit == "parameter replaced" else 1)


def _video(device: str):
    from sana_comfy.sana_core.video_transformer import SanaVideoConfig, SanaVideoTransformer

    cfg = SanaVideoConfig(num_layers=2, num_heads=2, head_dim=12, cross_heads=2, cross_head_dim=12,
                          caption_channels=48, in_channels=4, out_channels=4, mlp_ratio=2.5, patch_size=(1, 2, 2),
                          attention_bias=False, qk_norm=True, guidance_embeds=False, norm_eps=1e-6,
                          rope_max_seq_len=64, sample_size=30, guidance_embeds_scale=0.1)
    torch.manual_seed(0)
    return _random(SanaVideoTransformer(cfg, device=device, dtype=torch.float32), cfg.dim)


def _video_inputs(device: str, seed: int, per_token: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 3, 6, 8, generator=g)
    t = torch.rand(2, generator=g) * 1000
    if per_token:  # image-to-video: the first latent frame's tokens at timestep 0
        t = t.reshape(2, 1, 1, 1).expand(2, 3, 3, 4).clone()
        t[:, 0] = 0
    y = torch.randn(2, 10, 48, generator=g)
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[0, 4:] = 0
    return [v.to(device) for v in (x, t, y, mask)]


@pytest.mark.gpu
@pytest.mark.parametrize("per_token", [False, True], ids=["text_to_video", "image_to_video"])
def test_video_replay_equals_eager(per_token):
    m = _video("cuda")
    with torch.no_grad():
        for seed in (1, 2, 3, 4):  # eager, capture, then replays with other values
            a = _video_inputs("cuda", seed, per_token)
            torch.testing.assert_close(m(*a), _eager(m, *a), rtol=1e-5, atol=1e-6)
        assert captures() == 1
    m.to(torch.float64)
    assert caches.peek(m, "graphs") is None  # moved weights: the graphs go


def test_video_on_the_cpu_never_captures():
    m = _video("cpu")
    with torch.no_grad():
        for seed in (1, 2):
            m(*_video_inputs("cpu", seed))
    assert captures() == 0 and caches.peek(m, "graphs") is None
