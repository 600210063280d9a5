"""Reading weight files: memory-mapped safetensors (single or sharded), and `.pth` through the safe unpickler only.

Every reader returns a flat ``{name: tensor}`` dict on the CPU. Safetensors tensors are views of a private
(copy-on-write) memory map, so building a module with ``load_state_dict(..., assign=True)`` holds one copy of the
weights, paged in as they are touched.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
import struct
from pathlib import Path

import torch

from ..errors import SanaError
from .files import read_json

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

_PAGE = mmap.PAGESIZE

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def _check_file(path: Path) -> int:
    if not path.exists():
        raise SanaError(f"{path}: file not found")
    if path.is_dir():
        raise SanaError(f"{path}: is a folder, expected a weight file")
    size = path.stat().st_size
    if size == 0:
        raise SanaError(f"{path}: the file is empty (0 bytes); the download or copy did not finish")
    return size


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Memory-map one safetensors file. Truncated or corrupt files raise SanaError naming the file."""
    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SanaError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or 8 + n > size:
            raise SanaError(f"{path}: not a valid safetensors file (header length {n} for a {size}-byte file); "
                            "it is truncated, corrupt or in another format")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SanaError(f"{path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise SanaError(f"{path}: corrupt safetensors header (not a JSON object)")
        header.pop("__metadata__", None)
        data_start = 8 + n
        end = max((v["data_offsets"][1] for v in header.values()), default=0)
        if data_start + end > size:
            raise SanaError(f"{path}: truncated safetensors file: the header describes {data_start + end} bytes, "
                            f"the file has {size}")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if end else b""
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dtype = _ST_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise SanaError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        lo, hi = info["data_offsets"]
        shape = info["shape"]
        numel = 1
        for s in shape:
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if hi - lo != numel * itemsize:
            raise SanaError(f"{path}: tensor {name!r} has {hi - lo} bytes for shape {shape} ({dtype})")
        if numel == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        offset = data_start + lo
        if offset % itemsize:  # unaligned: copy instead of viewing
            t = torch.frombuffer(bytearray(buf[offset:offset + hi - lo]), dtype=dtype)
        else:
            t = torch.frombuffer(buf, dtype=dtype, count=numel, offset=offset)
        out[name] = t.view(shape)
        if isinstance(buf, mmap.mmap) and not offset % itemsize:
            out[name]._sana_span = (buf, offset, hi - lo)  # for release_source: (map, byte offset, byte length)
    return out


def release_source(t: torch.Tensor) -> None:
    """Drop the resident file pages lying wholly inside a mapped tensor that has just been copied elsewhere.

    The map is private and never written, so MADV_DONTNEED only forgets the pages: touching them again re-reads
    the file. Without this, casting a whole file (fp32 → bf16) would hold every source page until the end, on top
    of the cast copies.
    """
    span = getattr(t, "_sana_span", None)
    if span is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    buf, offset, n = span
    lo = -(-offset // _PAGE) * _PAGE
    hi = (offset + n) // _PAGE * _PAGE
    if hi > lo:
        buf.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def read_sharded(index_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a sharded index (``*.safetensors.index[.<variant>].json``) and every shard it names."""
    index_path = Path(index_path)
    _check_file(index_path)
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise SanaError(f"{index_path}: not a sharded-weights index (expected a JSON object with 'weight_map')")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.exists():
            raise SanaError(f"{index_path}: names shard {shard!r}, which is missing from {index_path.parent}")
        out.update(read_safetensors(shard_path))
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise SanaError(f"{index_path}: {len(missing)} tensors listed in the index are absent from the shards, "
                        f"e.g. {missing[0]!r}")
    return out


def read_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torch.save checkpoint with ``weights_only=True`` (no code from the file ever runs)."""
    path = Path(path)
    _check_file(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) torch.save format cannot be memory-mapped
            if "mmap" not in str(e) and "zip" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SanaError(f"{path}: refused to load: the file contains Python objects beyond tensors, which could run "
                        f"code when unpickled ({str(e).splitlines()[0]}). Convert it to safetensors from a source "
                        "you trust.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise SanaError(f"{path}: not a readable torch checkpoint ({str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model", "module", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SanaError(f"{path}: expected a dict of tensors (optionally under 'state_dict'), found {type(obj).__name__}")
    return obj


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read any supported weight file (by suffix)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".json"):  # a sharded index, also a variant's <stem>.safetensors.index.bf16.json
        return read_sharded(path)
    if name.endswith(SAFETENSORS_SUFFIXES):
        return read_safetensors(path)
    if name.endswith(PICKLE_SUFFIXES):
        return read_pickle(path)
    raise SanaError(f"{path}: unsupported weight file type; expected one of {', '.join(WEIGHT_SUFFIXES)}")


def strip_prefix(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix (e.g. ``model.diffusion_model.``) when every key carries it."""
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items()}
    return sd


def dominant_dtype(sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype holding most parameters: what "the file's own" dtype means for mixed files."""
    count: dict[torch.dtype, int] = {}
    for t in sd.values():
        if t.is_floating_point():
            count[t.dtype] = count.get(t.dtype, 0) + t.numel()
    if not count:
        return torch.float32
    return max(count, key=count.get)


def load_into(module: torch.nn.Module, sd: dict[str, torch.Tensor], dtype: torch.dtype, source: str) -> None:
    """Fill a meta-device module strictly, casting each tensor to ``dtype`` on the way (one tensor at a time)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise SanaError(f"{source}: weights do not match the detected model: {len(missing)} missing "
                        f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for k, ref in expected.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise SanaError(f"{source}: tensor {k!r} has shape {tuple(sd[k].shape)}, the detected model expects "
                            f"{tuple(ref.shape)}")
    cast = {}
    for k, v in sd.items():
        if v.is_floating_point() and v.dtype != dtype:
            cast[k] = v.to(dtype)
            release_source(v)
        else:
            cast[k] = v
    module.load_state_dict(cast, strict=True, assign=True)
