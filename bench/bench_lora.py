"""Benchmark: a LoRA on the 1.6B Sana transformer — merging it with the pack's plain-PyTorch path and through
ComfyUI's own patcher, what a merged LoRA costs per sampling step, and the memory each merge takes.

Random weights of the published 1.6B config (``Sana_1600M_1024px``), fp32 on the CPU. A random rank-32 LoRA in the
PEFT layout on every attention and Mix-FFN projection of every block (attn1/attn2 to_q, to_k, to_v, to_out.0;
ff.conv_inverted, ff.conv_point), written to a safetensors file and read back with ``lora.read``. In one run:

- merge outside ComfyUI: ``lora.apply`` (a copy sharing every unpatched tensor), best time of ``--repeats``;
- merge inside ComfyUI 0.3.75, in-process with ``--cpu``: the pack's host adapter as the LoRA nodes use it
  (``host.add_lora``), then ``load_models_gpu`` (where the host merges the patches) and loading the base handle
  again (where it restores its backup), alternated; the base weights after unpatching are compared bit for bit with
  those before (sha256 of every tensor);
- a sampling step: one transformer call at batch 2 (as with CFG; the caption's keys and values kept, as our sampler
  runs), the base and the ``lora.apply`` copy alternated, best of each — target: lora / base ≤ 1.01, a merged LoRA
  costs nothing per step. A strength-0 ``lora.apply`` copy, which computes with the base's own tensors, runs in the
  same rounds: its ratio to the base is the measurement's noise;
- memory: each merge's peak RSS above the RSS just before it (VmHWM, reset through /proc/self/clear_refs), next to
  the bytes of the patched layers' weights (what a merged copy, or the host while it keeps the originals for the
  restore, must hold) and the largest single layer's bytes — target: (peak extra − patched) / largest layer ≤ 1, at
  most one layer's transient copy beyond what is kept. Measured twice: first in a fresh child process where glibc
  maps every allocation of 1 MiB and up on its own (MALLOC_MMAP_THRESHOLD_), so the resident set follows the live
  tensors — what the merge itself holds; then in this process with glibc's default allocator, freed heap memory
  returned first (malloc_trim) — what a user sees: tensors under its mmap threshold, which grows to 32 MiB, are
  carved from the heap, where freed ones leave holes. The times and the step are taken in this process.

Run: .sana-env/venv/bin/python bench/bench_lora.py [--size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import GiB, MiB, alternate, call_inputs, comfy_in_process, hwm, machine, random_model, rel, reset_peak

comfy_in_process()  # ComfyUI's modules in this process, on the CPU, as inside a running ComfyUI

import comfy.model_management as mm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from sana_comfy.nodes import host  # noqa: E402
from sana_comfy.sana_core import lora  # noqa: E402
from sana_comfy.sana_core.transformer import PRESETS, SanaTransformer  # noqa: E402

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ff.conv_inverted", "ff.conv_point")


def build(preset: str) -> SanaTransformer:
    """The preset's transformer with random weights at a trained-like scale, fp32, speed layer on."""
    torch.manual_seed(0)
    return random_model(SanaTransformer, PRESETS[preset])


def write_lora(net: SanaTransformer, path: Path, rank: int) -> None:
    """A random PEFT LoRA on every TARGETS layer of every block: lora_A (r, in[, 1, 1]), lora_B (out, r[, 1, 1])."""
    g = torch.Generator().manual_seed(1)
    sd = {}
    for i in range(len(net.transformer_blocks)):
        for t in TARGETS:
            w = net.get_submodule(f"transformer_blocks.{i}.{t}").weight  # (out, in) or (out, in, 1, 1)
            tail = tuple(w.shape[2:])
            sd[f"transformer.transformer_blocks.{i}.{t}.lora_A.weight"] = torch.randn(
                (rank, w.shape[1], *tail), generator=g) * 0.02
            sd[f"transformer.transformer_blocks.{i}.{t}.lora_B.weight"] = torch.randn(
                (w.shape[0], rank, *tail), generator=g) * 0.02
    meta = {"transformer.r": rank, "transformer.lora_alpha": rank, "transformer.target_modules": list(TARGETS)}
    save_file(sd, str(path), metadata={"lora_adapter_metadata": json.dumps(meta)})


def digests(net: torch.nn.Module) -> dict[str, tuple[bytes, int]]:
    """Every tensor's sha256 and storage address."""
    out = {}
    for name, t in net.state_dict().items():
        out[name] = (hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).digest(),
                     t.data_ptr())
    return out


def merge_plain(net, sd, repeats: int):
    """lora.apply, best time and worst peak extra over ``repeats`` (the previous copy freed before each)."""
    best, extra, merged = float("inf"), 0, None
    for _ in range(repeats):
        merged = None
        before = reset_peak()
        t0 = time.perf_counter()
        with torch.no_grad():
            merged = lora.apply(net, sd, "transformer", 1.0, "bench")
        best = min(best, time.perf_counter() - t0)
        extra = max(extra, hwm() - before)
    return merged, best, extra


def step_cost(base, merged, control, size: int, repeats: int) -> tuple[dict[str, float], float]:
    """Best time of one call at batch 2 for each model, alternated (the order reversed every other round); and the
    output's relative change with the LoRA."""
    x, t, y, mask = call_inputs(size, generator=torch.Generator().manual_seed(2))
    models = {"base": base, "lora": merged, "control": control}
    runs = {k: lambda m=m: m(x, t, y, mask) for k, m in models.items()}
    with torch.no_grad():  # warm-up: each model keeps the caption's keys and values from then on, as in sampling
        res = alternate(runs, repeats, warmups=1, keep=True, swap=True)
    return res.best(), rel(res.outputs["lora"], res.outputs["base"])


def merge_host(net, sd, repeats: int, reference: dict[str, torch.Tensor]):
    """host.add_lora, then load_models_gpu of the patched handle (merge) and of the base handle (restore),
    alternated ``repeats`` times. Returns the times, the worst peak extra of a merge, and the largest difference
    between the host's merged weights and ``reference`` (lora.apply's, for some layers)."""
    handle = host.wrap(net, "diffusion")
    t0 = time.perf_counter()
    patched = host.add_lora(handle, sd, "transformer", 1.0, "bench")
    t_add = time.perf_counter() - t0
    t_merge, t_restore, extra, diff = float("inf"), float("inf"), 0, 0.0
    for _ in range(repeats):
        before = reset_peak()
        t0 = time.perf_counter()
        mm.load_models_gpu([patched], force_full_load=True)
        t_merge = min(t_merge, time.perf_counter() - t0)
        extra = max(extra, hwm() - before)
        inner = host.unwrap(patched)
        for path, w in reference.items():
            diff = max(diff, (inner.get_submodule(path).weight - w).abs().max().item())
        t0 = time.perf_counter()
        mm.load_models_gpu([handle], force_full_load=True)
        t_restore = min(t_restore, time.perf_counter() - t0)
    mm.unload_all_models()
    return t_add, t_merge, t_restore, extra, diff


def setup(preset: str, rank: int, tmp: Path):
    """The model, the LoRA read back from its file, and the bytes of each patched layer's weight."""
    net = build(preset)
    path = tmp / "lora.safetensors"
    write_lora(net, path, rank)
    sd = lora.read(path)
    sum(float(v.float().sum()) for v in sd.values())  # page the memory-mapped file in: not a merge's memory
    found = lora.prepare(net, sd, "transformer", "bench")
    sizes = {k: net.get_submodule(k.removesuffix(".weight")).weight for k in found.targets.values()}
    return net, sd, path, {k: w.numel() * w.element_size() for k, w in sizes.items()}


def live_memory(preset: str, rank: int) -> dict[str, int]:
    """Each merge's peak extra in a fresh process whose allocator maps every tensor of 1 MiB and up on its own."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run([sys.executable, __file__, "--live-memory", "--preset", preset, "--rank", str(rank)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the live-memory child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args) -> None:
    """The --live-memory run: one merge each way, the peak extras printed as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        net, sd, _, _ = setup(args.preset, args.rank, Path(tmp))
        merged, _, apply = merge_plain(net, sd, 1)
        del merged
        host_extra = merge_host(net, sd, 1, {})[3]
    print(json.dumps({"apply": apply, "host": host_extra}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512,
                    help="image side of the timed step in px (latent side: size / 32); 1024 takes 4x as long")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--preset", default="Sana_1600M_1024px")
    ap.add_argument("--live-memory", action="store_true", help=argparse.SUPPRESS)  # the child's run
    args = ap.parse_args()
    if args.live_memory:
        return child(args)
    t_start = time.perf_counter()
    print(f"machine: {machine()}; ComfyUI in-process (--cpu, device {mm.get_torch_device()}); {args.preset}, fp32",
          flush=True)
    t0 = time.perf_counter()
    live = live_memory(args.preset, args.rank)  # first: the child and this process never hold a model together
    print(f"live tensors (a child process, each tensor mapped on its own): peak RSS while merging: lora.apply "
          f"+{live['apply'] / GiB:.2f} GiB, ComfyUI +{live['host'] / GiB:.2f} GiB ({time.perf_counter() - t0:.0f} s)",
          flush=True)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        net, sd, path, sizes = setup(args.preset, args.rank, Path(tmp))
        patched_bytes, largest = sum(sizes.values()), max(sizes.values())
        weights = sum(p.numel() * p.element_size() for p in net.parameters())
        print(f"{weights / GiB:.2f} GiB of weights, built with the LoRA file in {time.perf_counter() - t0:.0f} s; "
              f"LoRA rank {args.rank}: {len(sd)} tensors, {path.stat().st_size / MiB:.0f} MiB, {len(sizes)} layers "
              f"patched: {patched_bytes / GiB:.2f} GiB of weights, the largest {largest / MiB:.0f} MiB "
              f"({max(sizes, key=sizes.get)})", flush=True)
        before = digests(net)

        merged, t_apply, apply_glibc = merge_plain(net, sd, args.repeats)
        untouched = digests(net) == before
        print(f"lora.apply: {t_apply:.2f} s, peak RSS +{apply_glibc / GiB:.2f} GiB (glibc default); base "
              f"unchanged: {untouched}", flush=True)
        control = lora.apply(net, sd, "transformer", 0.0, "bench")  # strength 0: a copy holding the base's tensors
        step, change = step_cost(net, merged, control, args.size, args.repeats)
        del control
        print(f"step at batch 2, {args.size} px: base {step['base']:.2f} s, LoRA merged {step['lora']:.2f} s, ratio "
              f"{step['lora'] / step['base']:.3f}; control (strength 0: the base's own tensors) {step['control']:.2f} "
              f"s, ratio {step['control'] / step['base']:.3f} (output changed by {change:.2e} relative)", flush=True)
        reference = {f"transformer_blocks.{i}.{t}": merged.get_submodule(f"transformer_blocks.{i}.{t}").weight.clone()
                     for i in (0, len(net.transformer_blocks) - 1) for t in TARGETS}
        del merged
        t_add, t_merge, t_restore, host_glibc, diff = merge_host(net, sd, args.repeats, reference)
        print(f"ComfyUI: add_lora {t_add:.2f} s; merge (load_models_gpu) {t_merge:.2f} s, peak RSS "
              f"+{host_glibc / GiB:.2f} GiB (glibc default); restore (load the base again) {t_restore:.2f} s; "
              f"merged weights vs lora.apply's (blocks 0 and last): max |diff| {diff:.2e}", flush=True)
        after = digests(net)
        identical = after.keys() == before.keys() and all(after[k][0] == v[0] for k, v in before.items())
        same_storage = all(after[k][1] == v[1] for k, v in before.items())
        print(f"ComfyUI: base weights after unpatching bit-identical to before: {identical} "
              f"({len(before)} tensors, sha256); the same storage as before: {same_storage}", flush=True)

    def over(extra: int) -> str:
        return f"+{extra / GiB:5.2f} GiB, (extra - patched) / largest layer {(extra - patched_bytes) / largest:6.2f}"

    print(f"\nsummary ({args.preset}, fp32, CPU; rank-{args.rank} LoRA on {len(sizes)} layers, "
          f"{patched_bytes / GiB:.2f} GiB patched, largest layer {largest / MiB:.0f} MiB):")
    print(f"  merge lora.apply             {t_apply:7.2f} s   base unchanged: {untouched}")
    print(f"  merge ComfyUI load_models    {t_merge:7.2f} s")
    print(f"  restore ComfyUI (load base)  {t_restore:7.2f} s   base bit-identical after unpatching: {identical}")
    print("  peak RSS extra while merging (target: (extra - patched) / largest layer <= 1)")
    print(f"    lora.apply, live tensors   {over(live['apply'])}")
    print(f"    ComfyUI,    live tensors   {over(live['host'])}")
    print(f"    lora.apply, glibc default  {over(apply_glibc)}")
    print(f"    ComfyUI,    glibc default  {over(host_glibc)}")
    print(f"  step {args.size} px batch 2: base {step['base']:6.2f} s, LoRA merged {step['lora']:6.2f} s, "
          f"ratio {step['lora'] / step['base']:5.3f}  (target <= 1.01; the noise: a copy of the base's own tensors "
          f"{step['control'] / step['base']:5.3f})")
    print(f"  wall time {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
