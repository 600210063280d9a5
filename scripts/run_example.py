"""The main job: start a real headless ComfyUI with this package, run the text-to-image example workflow (or another,
``--workflow``: e.g. example_workflows/api/sana_text_to_video.json), save the PNG (or MP4) and print its path. Real
weights are used when present under $SANA_MODELS_DIR (ComfyUI's models layout, with the names the example uses);
otherwise tiny random offline weights are built first (the image is then noise-like, but every step of the real
pipeline runs)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # script-only: reuse the test harness and the tiny-model builder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workflow", default=str(ROOT / "example_workflows" / "api" / "sana_text_to_image.json"))
    ap.add_argument("--out", default=str(ROOT / "out"), help="where the PNG is copied")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()

    from support.comfy_server import ComfyServer, comfy_dir

    prompt = json.loads(Path(args.workflow).read_text())
    if args.steps:
        for node in prompt.values():
            if node["class_type"] == "SanaSample":
                node["inputs"]["steps"] = args.steps
    base = Path(tempfile.mkdtemp(prefix="sana-comfy-"))
    models = os.environ.get("SANA_MODELS_DIR")
    if models and (Path(models) / "diffusion_models").is_dir():
        (base / "models").symlink_to(Path(models).resolve(), target_is_directory=True)
        print(f"using real weights from {models}")
    else:
        from support.pipeline import build_tiny_repo, install_model_folders
        from support.video import build_tiny_video_repo

        print("no real weights in $SANA_MODELS_DIR: building tiny offline weights")
        install_model_folders(build_tiny_repo(base / "tiny"), base / "models",
                              video=build_tiny_video_repo(base / "tiny-video"))
    shutil.copytree(comfy_dir() / "input", base / "input", dirs_exist_ok=True)  # as a fresh install has (example.png)
    server = ComfyServer(base)
    try:
        hist = server.run(prompt, timeout=3600)
    finally:
        server.stop()
    if hist["status"]["status_str"] != "success":
        print(json.dumps(hist["status"], indent=1)[:4000], file=sys.stderr)
        print(server.log()[-4000:], file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for node in hist["outputs"].values():
        for im in node.get("images", []):  # images, and the video nodes' files
            src = base / "output" / im["subfolder"] / im["filename"]
            dst = out / im["filename"]
            dst.write_bytes(src.read_bytes())
            print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
