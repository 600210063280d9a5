"""Resolution binning (docs/model.md §6): aspect-ratio tables, nearest bin, and the resize + centre crop back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import SanaError
from .latent import SANA, WAN21

# ratio → (height, width) at 512 px; 1024 is exactly 2× (same keys).
_BIN_512 = {
    "0.25": (256, 1024), "0.28": (256, 928), "0.32": (288, 896), "0.33": (288, 864), "0.35": (288, 832),
    "0.4": (320, 800), "0.42": (320, 768), "0.48": (352, 736), "0.5": (352, 704), "0.52": (352, 672),
    "0.57": (384, 672), "0.6": (384, 640), "0.68": (416, 608), "0.72": (416, 576), "0.78": (448, 576),
    "0.82": (448, 544), "0.88": (480, 544), "0.94": (480, 512), "1.0": (512, 512), "1.07": (512, 480),
    "1.13": (544, 480), "1.21": (544, 448), "1.29": (576, 448), "1.38": (576, 416), "1.46": (608, 416),
    "1.67": (640, 384), "1.75": (672, 384), "2.0": (704, 352), "2.09": (736, 352), "2.4": (768, 320),
    "2.5": (800, 320), "3.0": (864, 288), "4.0": (1024, 256),
}
# ratio → (height, width) at 2048 px; 4096 is exactly 2× (same keys).
_BIN_2048 = {
    "0.25": (1024, 4096), "0.26": (1024, 3968), "0.27": (1024, 3840), "0.28": (1024, 3712), "0.32": (1152, 3584),
    "0.33": (1152, 3456), "0.35": (1152, 3328), "0.4": (1280, 3200), "0.42": (1280, 3072), "0.48": (1408, 2944),
    "0.5": (1408, 2816), "0.52": (1408, 2688), "0.57": (1536, 2688), "0.6": (1536, 2560), "0.68": (1664, 2432),
    "0.72": (1664, 2304), "0.78": (1792, 2304), "0.82": (1792, 2176), "0.88": (1920, 2176), "0.94": (1920, 2048),
    "1.0": (2048, 2048), "1.07": (2048, 1920), "1.13": (2176, 1920), "1.21": (2176, 1792), "1.29": (2304, 1792),
    "1.38": (2304, 1664), "1.46": (2432, 1664), "1.67": (2560, 1536), "1.75": (2688, 1536), "2.0": (2816, 1408),
    "2.09": (2944, 1408), "2.4": (3072, 1280), "2.5": (3200, 1280), "2.89": (3328, 1152), "3.0": (3456, 1152),
    "3.11": (3584, 1152), "3.62": (3712, 1024), "3.75": (3840, 1024), "3.88": (3968, 1024), "4.0": (4096, 1024),
}
BIN_TABLES: dict[int, dict[str, tuple[int, int]]] = {
    512: _BIN_512,
    1024: {k: (h * 2, w * 2) for k, (h, w) in _BIN_512.items()},
    2048: _BIN_2048,
    4096: {k: (h * 2, w * 2) for k, (h, w) in _BIN_2048.items()},
}


def table_for_model(sample_size: int) -> int:
    """The table a model trained at ``sample_size`` latent cells a side uses (diffusers: 16/32/64/128 →
    512/1024/2048/4096 px)."""
    res = sample_size * SANA.compression
    if res not in BIN_TABLES:
        raise SanaError(f"no resolution-bin table for a model trained at {res} px (sample_size {sample_size}); "
                        f"tables exist for {sorted(BIN_TABLES)}")
    return res


def table_for_size(height: int, width: int) -> int:
    """Without a model: the table whose resolution is nearest the requested area."""
    side = (height * width) ** 0.5
    return min(BIN_TABLES, key=lambda r: abs(r - side))


def nearest_bin(height: int, width: int, table: int | dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(bin height, bin width) whose ratio is nearest height/width in ``table`` (a resolution of ``BIN_TABLES`` or a
    table itself); ties go to the first (smaller) key."""
    if height <= 0 or width <= 0:
        raise SanaError(f"height and width must be positive, got {height}x{width}")
    bins = BIN_TABLES[table] if isinstance(table, int) else table
    ar = float(height / width)
    key = min(bins, key=lambda k: abs(float(k) - ar))
    h, w = bins[key]
    return int(h), int(w)


def resize_and_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) → (B, C, height, width), video frames as a batch too: bilinear resize to cover, then centre crop
    (diffusers' back-mapping)."""
    h0, w0 = images.shape[-2:]
    if (h0, w0) == (height, width):
        return images
    ratio = max(height / h0, width / w0)
    nh, nw = max(height, int(h0 * ratio)), max(width, int(w0 * ratio))  # a product just under a whole number
    images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return images[:, :, top:top + height, left:left + width]


def check_size(height: int, width: int) -> None:
    """Without binning the request is the latent's size × the compression."""
    c = SANA.compression
    if height % c or width % c or height <= 0 or width <= 0:
        raise SanaError(f"image size {width}x{height} must be positive multiples of {c} (the DC-AE "
                        f"compresses {c}×); e.g. {max(c, round(width / c) * c)}x{max(c, round(height / c) * c)}")


def plan(width: int, height: int, binning: bool, resolution: int | None = None) -> dict:
    """What SanaEmptyLatent makes for a request, as plain data (the frontend's readout shows the same): the size the
    latent is made at (``bin``, [H, W]), the latent's [H/32, W/32], and the size SanaDecode crops back to (``crop``,
    None when it is the bin). ``table``: the bin table used, the model's training ``resolution`` or, without a model,
    the table nearest the requested area; None with binning off. Raises SanaError for a size it cannot make."""
    if binning:
        table = table_for_model(SANA.cells(resolution)) if resolution else table_for_size(height, width)
        bh, bw = nearest_bin(height, width, table)
    else:
        check_size(height, width)
        table, bh, bw = None, height, width
    return {"table": table, "bin": [bh, bw], "latent": [SANA.cells(bh), SANA.cells(bw)],
            "crop": None if (bh, bw) == (height, width) else [height, width]}


def aspect_size(aspect: str, width: int, height: int, resolution: int | None = None) -> dict:
    """Width and height for an aspect preset "w:h": the bin nearest that ratio in the model's table or, without a
    model, in the table nearest the current width x height."""
    a, b = (int(x) for x in aspect.split(":"))
    table = resolution or table_for_size(height, width)
    bh, bw = nearest_bin(b, a, table)
    return {"width": bw, "height": bh, "table": table}


# --- SANA-Video -------------------------------------------------------------------------------------------------------

# ratio → (height, width) of the SANA-Video tables; a model's table is picked by its sample_size (30: 480p, 22: 720p)
VIDEO_BIN_TABLES: dict[int, dict[str, tuple[int, int]]] = {
    480: {"0.5": (448, 896), "0.57": (480, 832), "0.68": (528, 768), "0.78": (560, 720), "1.0": (624, 624),
          "1.13": (672, 592), "1.29": (720, 560), "1.46": (768, 528), "1.67": (816, 496), "1.75": (832, 480),
          "2.0": (896, 448)},
    720: {"0.5": (672, 1344), "0.57": (704, 1280), "0.68": (800, 1152), "0.78": (832, 1088), "1.0": (960, 960),
          "1.13": (1024, 896), "1.29": (1088, 832), "1.46": (1152, 800), "1.67": (1248, 736), "1.75": (1280, 704),
          "2.0": (1344, 672)},
}
VIDEO_PATCH = 2  # the SANA-Video transformer's patch, in latent cells a side


def video_plan(width: int, height: int, length: int, binning: bool, resolution: int | None = None) -> dict:
    """What a SANA-Video latent for a request is, as ``plan`` gives it for images: ``latent`` is
    [frames, H/8, W/8]; ``table`` is the model's (``resolution`` 480 or 720) or the one nearest the requested area."""
    frames = WAN21.frames(length)
    step = WAN21.compression * VIDEO_PATCH
    if binning:
        table = resolution or min(VIDEO_BIN_TABLES, key=lambda r: abs(r * r * 16 / 9 - height * width))
        bh, bw = nearest_bin(height, width, VIDEO_BIN_TABLES[table])
    else:
        if height % step or width % step or height <= 0 or width <= 0:
            raise SanaError(f"video size {width}x{height} must be positive multiples of {step} (the Wan VAE's 8× "
                            f"and the transformer's 2× patch); e.g. {max(step, round(width / step) * step)}x"
                            f"{max(step, round(height / step) * step)}")
        table, bh, bw = None, height, width
    return {"table": table, "bin": [bh, bw], "latent": [frames, bh // WAN21.compression, bw // WAN21.compression],
            "crop": None if (bh, bw) == (height, width) else [height, width]}
