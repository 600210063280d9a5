"""What the benchmark scripts share.

Importing this module puts tests/ on the path and registers the package under the tests' stable name ``sana_comfy``
whatever the checkout folder is called (tests/support/inprocess.py, without ComfyUI until a script calls
``comfy_in_process()``), so that the scripts import ``sana_comfy.sana_core``, ``sana_comfy.nodes`` and the tests'
helpers (``support.text``, ``support.models``) alike. Then: ComfyUI's modules in this process, the machine's
description, the resident set, timing of runs alternated in rounds, random models (weights at a trained-like scale;
the published configs for the whole pipeline), diffusers' arguments for our configs, the inputs of a transformer
call, relative differences, and table rows.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import inprocess  # noqa: E402

inprocess.register_package()

if TYPE_CHECKING:
    from sana_comfy.sana_core.transformer import SanaConfig

GiB, MiB = 2**30, 2**20
PROMPT = "a cyberpunk cat with a neon sign that says 'Sana', highly detailed, 8k"
NEG = "blurry, low quality"

# The published f32c32 DC-AE as diffusers' AutoencoderDC arguments.
DIFFUSERS_DCAE = dict(encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                      decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                      encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                      decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                      encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3,) * 6,
                      encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                      decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                      upsample_block_type="interpolate", downsample_block_type="Conv",
                      decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)


# ---------------------------------------------------------------------------------------------------------------
# ComfyUI in this process


def comfy_in_process() -> Path:
    """ComfyUI's own modules (``$SANA_ENV/ComfyUI``, by default .sana-env/ComfyUI) importable in this process, on the
    CPU, through the tests' own set-up (tests/support/inprocess.py: ComfyUI after the path's own entries, ``--cpu``,
    the package imported again so that it exposes the nodes, the host extended). Call it before importing
    ``sana_comfy.nodes`` or ``comfy.*``; safe to call again. Returns ComfyUI's folder."""
    comfy = inprocess.comfy_dir()
    if not (comfy / "main.py").is_file():
        raise FileNotFoundError(f"no ComfyUI at {comfy} (its main.py is missing): set SANA_ENV to the folder that "
                                "holds ComfyUI/")
    if str(comfy) not in sys.path:
        assert "comfy.model_management" not in sys.modules, "comfy.model_management was imported before --cpu was set"
    inprocess.setup()
    return comfy


# ---------------------------------------------------------------------------------------------------------------
# The machine and its memory


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where it has none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line that tells two machines' tables apart: CPU model, cores, torch version, torch threads; and the load
    average over the last minute (other work on the cores slows every timing)."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {os.getloadavg()[0]:.1f}")


def rss() -> int:
    """The resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm() -> int:
    """VmHWM, the peak resident set so far in bytes, read exactly (ru_maxrss is updated lazily)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak(trim: bool = True) -> int:
    """Collect garbage, set VmHWM back to the resident set (Linux: "5" to /proc/self/clear_refs) and return it.
    ``trim``: return freed heap memory to the system first (malloc_trim), so that the peak counts only what is live;
    a call timed after it then pays for its own page faults."""
    gc.collect()
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return hwm()


# ---------------------------------------------------------------------------------------------------------------
# Timing


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable, device: str = "cpu") -> tuple[float, object]:
    """(seconds, output) of one call; on CUDA the device is synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


@dataclass
class Rounds:
    """What ``alternate`` measured: each run's seconds and peak resident bytes per round, and its last output."""

    seconds: dict[str, list[float]]
    peaks: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, object] = field(default_factory=dict)

    def best(self) -> dict[str, float]:
        return {k: min(v, default=float("inf")) for k, v in self.seconds.items()}

    def median(self) -> dict[str, float]:
        return {k: statistics.median(v) if v else float("nan") for k, v in self.seconds.items()}

    def peak(self) -> dict[str, int]:
        return {k: max(v, default=0) for k, v in self.peaks.items()}


def alternate(runs: dict[str, Callable], repeats: int, device: str = "cpu", *, warmups: int | dict[str, int] = 0,
              peaks: bool = False, trim: bool = True, keep: bool = False, swap: bool = False,
              each_round: Callable[[int, Rounds], None] | None = None) -> Rounds:
    """Call each run ``warmups`` times (a number for all, or per run; untimed, run by run), then every run once per
    round for ``repeats`` rounds, so that a drift of the machine's speed reaches all of them alike. ``peaks``: the
    resident set's peak of each call (``reset_peak(trim)`` before it). ``keep``: keep each run's last output,
    warm-ups included (otherwise it is freed before the next call). ``swap``: the order reversed every other round.
    ``each_round(i, rounds)`` is called after round ``i``."""
    res = Rounds({k: [] for k in runs}, {k: [] for k in runs} if peaks else {})
    for k, fn in runs.items():
        for _ in range(warmups.get(k, 0) if isinstance(warmups, dict) else warmups):
            out = fn()
            if keep:
                res.outputs[k] = out
            del out
    for i in range(repeats):
        order = list(runs.items())
        if swap and i % 2:
            order.reverse()
        for k, fn in order:
            if peaks:
                reset_peak(trim)
            seconds, out = timed(fn, device)
            res.seconds[k].append(seconds)
            if peaks:
                res.peaks[k].append(hwm())
            if keep:
                res.outputs[k] = out
            del out
        if each_round is not None:
            each_round(i, res)
    return res


# ---------------------------------------------------------------------------------------------------------------
# Models and tensors


def trained_like_(module: torch.nn.Module) -> torch.nn.Module:
    """Random weights at a trained-like scale, in place: matrices N(0, 0.02²), norm weights 1, other vectors 0."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(std=0.02) if p.ndim > 1 else p.fill_(1.0 if "norm" in name else 0.0)
    return module


def random_model(cls, cfg, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """``cls(cfg)`` built on the meta device, filled by ``trained_like_`` on the CPU, speed layer on."""
    from sana_comfy.sana_core import speed

    with torch.device("meta"):
        net = cls(cfg, dtype=dtype)
    net.to_empty(device="cpu")
    trained_like_(net)
    return speed.apply(net.eval().requires_grad_(False), True)


def build_models(tmp: Path, size: int):
    """Random models of the published configs, fp32, speed layer on: the Sana 0.6B trained at ``size`` px
    (``trained_like_``), the DC-AE f32c32 (its own init) and Gemma-2-2B with the stand-in tokenizer written to
    ``tmp``/tok (its 256k-row embedding shrunk to that vocabulary)."""
    from sana_comfy.sana_core import speed
    from sana_comfy.sana_core.dcae import DCAE
    from sana_comfy.sana_core.dcae_blocks import DCAEConfig
    from sana_comfy.sana_core.text_encoder import SanaTextEncoder
    from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer
    from support.text import build_tokenizer
    from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = PRESETS.get(f"Sana_600M_{size}px", PRESETS["Sana_600M_1024px"])  # the 0.6B trained at this size
    net = trained_like_(SanaTransformer(cfg, dtype=torch.float32))
    speed.apply(net.eval().requires_grad_(False), True)
    vae = speed.apply(DCAE(DCAEConfig()).eval().requires_grad_(False), True)
    tok = GemmaTokenizerFast.from_pretrained(build_tokenizer(tmp / "tok"))
    gcfg = Gemma2Config(vocab_size=len(tok), hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                        sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, max_position_embeddings=8192)
    gemma = Gemma2Model(gcfg).eval().requires_grad_(False)
    enc = speed.apply(SanaTextEncoder(gemma, tok, "random Gemma-2-2B"), True)
    print(f"Sana 0.6B trained at {cfg.resolution} px; built random models in {time.perf_counter() - t0:.0f} s "
          f"(Gemma-2-2B layers with a {len(tok)}-token vocabulary: the 256k-row embedding is a lookup, it costs "
          "no time)", flush=True)
    return net, vae, enc


def diffusers_kwargs(cfg: SanaConfig) -> dict:
    """SanaTransformer2DModel's arguments for one of our configs."""
    return dict(num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, num_layers=cfg.num_layers,
                num_cross_attention_heads=cfg.cross_heads, cross_attention_head_dim=cfg.cross_head_dim,
                cross_attention_dim=cfg.dim, caption_channels=cfg.caption_channels, mlp_ratio=cfg.mlp_ratio,
                sample_size=cfg.sample_size, interpolation_scale=cfg.interpolation_scale,
                qk_norm="rms_norm_across_heads" if cfg.qk_norm else None)


def call_inputs(size: int, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
    """One transformer call at batch 2, as with CFG: x (2, 32, size/32, size/32), t (2,) at 999, caption
    (2, 300, 2304) and its mask (2, 300), the first item's cut to 20 tokens."""
    n = size // 32
    x = torch.randn(2, 32, n, n, dtype=dtype, generator=generator)
    y = torch.randn(2, 300, 2304, dtype=dtype, generator=generator)
    mask = torch.ones(2, 300, dtype=torch.int64)
    mask[0, 20:] = 0
    return x, torch.tensor([999.0, 999.0]), y, mask


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 difference of ``a`` from ``b``."""
    a, b = a.float(), b.float().to(a.device)
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------------------------------------------
# Tables


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "—"


def markdown_row(cells: Sequence[object], widths: Sequence[int] = ()) -> str:
    """``| a | b |``; a ``|`` inside a cell becomes ``/``; cell ``i`` padded to ``widths[i]`` where given."""
    cells = [str(c).replace("|", "/") for c in cells]
    cells = [c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(cells)]
    return "| " + " | ".join(cells) + " |"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table with its columns padded to line up as plain text too."""
    widths = [max(len(str(r[i]).replace("|", "/")) for r in (head, *rows)) for i in range(len(head))]
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([markdown_row(head, widths), rule, *(markdown_row(r, widths) for r in rows)])
