"""Record what the real host makes of the shipped workflows, for changes that must keep saved workflows working:
every API template and every workflow saved by a frontend (tests/data/frontend-*/, in its API export) run in a real
headless ComfyUI on the tiny offline weights (their images), and the pack's node schemas as /object_info reports them.

    python scripts/record_workflows.py OUT.npz                       # record
    python scripts/record_workflows.py OUT.npz --against BEFORE.npz  # record and compare (images bit for bit)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # script-only: the test harness and the tiny-model builder

SCHEMA_KEYS = ("input", "input_order", "output", "output_name", "output_is_list", "name", "display_name", "category",
               "output_node")  # what saved workflows and the frontend depend on


def record() -> dict[str, np.ndarray]:
    from support.comfy_server import ComfyServer, comfy_dir
    from support.pipeline import build_tiny_repo, install_model_folders
    from support.video import build_tiny_video_repo

    base = Path(tempfile.mkdtemp(prefix="sana-record-"))
    install_model_folders(build_tiny_repo(base / "tiny"), base / "models",
                          video=build_tiny_video_repo(base / "tiny-video"))
    (base / "input").mkdir()
    for f in (comfy_dir() / "input").iterdir():
        if f.is_file():
            (base / "input" / f.name).write_bytes(f.read_bytes())
    server = ComfyServer(base)
    out: dict[str, np.ndarray] = {}
    try:
        info = server.get("/object_info")
        ours = {k: {f: v.get(f) for f in SCHEMA_KEYS} for k, v in info.items()
                if str(v.get("python_module", "")).endswith("comfyui-sana")}
        out["object_info"] = np.frombuffer(json.dumps(ours, sort_keys=True).encode(), dtype=np.uint8)
        saved = sorted((ROOT / "tests" / "data").glob("frontend-*/*.api.json"))
        for wf in sorted((ROOT / "example_workflows" / "api").glob("*.json")) + saved:
            hist = server.run(json.loads(wf.read_text()), timeout=900)
            if hist["status"]["status_str"] != "success":
                raise SystemExit(f"{wf.name} failed: {json.dumps(hist['status'])[:2000]}\n{server.log()[-2000:]}")
            name = f"{wf.parent.name}/{wf.name.removesuffix('.api.json')}" if wf in saved else wf.stem
            videos = {n: o for n, o in hist["outputs"].items() if o.get("animated")}
            for tag, o in videos.items():  # a saved video: its frames
                out[f"{name}/{tag}"] = _frames(base / "output" / o["images"][0]["subfolder"] / o["images"][0]["filename"])
            if videos:
                continue
            _, images = server.results(hist)
            for tag, img in sorted(images.items()):
                out[f"{name}/{tag}"] = img.astype(np.uint8)
    finally:
        server.stop()
    return out


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as f:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in f.decode(video=0)])


def _combo_form(schemas: dict) -> dict:
    """The schemas with every combo in the node API's form (["COMBO", {"options": [...]}]) and without the defaults
    the node API writes out (multiselect, multiline: false): the classic form means the same to every frontend."""
    def one(spec):
        if isinstance(spec[0], list):
            spec = ["COMBO", {**(spec[1] if len(spec) > 1 else {}), "options": spec[0]}]
        if len(spec) > 1:
            spec = [spec[0], {k: v for k, v in spec[1].items() if (k, v) not in (("multiselect", False),
                                                                                 ("multiline", False))}]
        return spec

    return {name: {**s, "input": {group: {k: one(v) for k, v in inputs.items()}
                                  for group, inputs in (s.get("input") or {}).items()}}
            for name, s in schemas.items()}


def compare(now: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> list[str]:
    diffs = [f"{k}: missing now" for k in before if k not in now]
    for k in sorted(set(now) & set(before)):
        if k == "object_info":
            a, b = (_combo_form(json.loads(r[k].tobytes())) for r in (now, before))
            diffs += [f"object_info {n}: {json.dumps(b.get(n))[:400]} → {json.dumps(a.get(n))[:400]}"
                      for n in sorted(set(a) | set(b)) if n in b and a.get(n) != b.get(n)]
        elif now[k].shape != before[k].shape or not np.array_equal(now[k], before[k]):
            diffs.append(f"{k}: differs")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--against")
    args = ap.parse_args()
    now = record()
    np.savez(args.out, **now)
    print(f"{len(now) - 1} images and {len(json.loads(now['object_info'].tobytes()))} node schemas → {args.out}")
    if args.against:
        before = dict(np.load(args.against))
        diffs = compare(now, before)
        new = [k for k in now if k not in before]
        print("\n".join(diffs) if diffs else f"no difference from {args.against}"
              + (f" (new since: {', '.join(new)})" if new else ""))
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
