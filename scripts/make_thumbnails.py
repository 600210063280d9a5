"""Renders the thumbnail of every example workflow: `example_workflows/<name>.jpg`, the file ComfyUI's template
browser requests beside `<name>.json`. Each is a screenshot of the template's graph in the real frontend: a real
ComfyUI started headless on 127.0.0.1 (tests/support/comfy_server.py, stopped by its PID) with only the inputs a fresh
install ships, headless Chromium driven by Playwright. It also checks that the frontend turns each UI template into
exactly its API twin (the Note left out). Run: python scripts/make_thumbnails.py [--shots DIR]"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))  # script-only: reuse the test harness's server
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SIZE, QUALITY = 640, 80  # square, like the browser's cards; a few tens of KB each
MARGIN = 24  # px of canvas around the graph
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}


def fresh_input(folder: Path) -> None:
    """What a fresh ComfyUI has in input/ (example.png), nothing the tests write."""
    from support.comfy_server import comfy_dir

    folder.mkdir(parents=True, exist_ok=True)
    for f in (comfy_dir() / "input").iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)


def frontend_prompt_mismatches(page, api: dict) -> list[str]:
    """What differs between the prompt the frontend makes of the loaded graph and the API twin (class and inputs)."""
    got = page.evaluate("async () => (await app.graphToPrompt()).output")
    want = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    got = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in got.items()}
    return [f"node {k}: frontend {got.get(k)} vs twin {want.get(k)}" for k in sorted(set(got) | set(want))
            if got.get(k) != want.get(k)]


PLACE = """() => {
    const T = LiteGraph.NODE_TITLE_HEIGHT;
    let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
    for (const nd of app.graph._nodes) {
        x0 = Math.min(x0, nd.pos[0]); y0 = Math.min(y0, nd.pos[1] - T);
        x1 = Math.max(x1, nd.pos[0] + nd.size[0]); y1 = Math.max(y1, nd.pos[1] + nd.size[1]);
    }
    const ds = app.canvas.ds, r = app.canvas.canvas.getBoundingClientRect();
    const left = Math.round((r.width - (x1 - x0)) / 2), top = Math.round((r.height - (y1 - y0)) / 2);
    ds.scale = 1; ds.offset[0] = left - x0; ds.offset[1] = top - y0;
    app.canvas.setDirty(true, true);
    return {x: r.left + left, y: r.top + top, width: x1 - x0, height: y1 - y0, offset: [...ds.offset]};
}"""


def shoot(page, module: str, name: str) -> bytes:
    """Loads the template as the browser's template card does, waits for the input preview, places the graph at
    scale 1 in the middle of the page (away from its overlays) and screenshots exactly the graph's bounds."""
    page.evaluate("""async ([m, n]) => {
        const wf = await (await fetch(`/api/workflow_templates/${m}/${encodeURIComponent(n)}.json`)).json();
        await app.loadGraphData(wf, true, true, n);
    }""", [module, name])
    page.wait_for_function("() => app.graph._nodes.filter(n => n.type === 'LoadImage')"
                           ".every(n => n.imgs?.length && n.imgs.every(i => i.complete && i.naturalWidth > 0))",
                           timeout=30000)
    page.wait_for_timeout(1000)  # the frontend settles node sizes and the view after loading
    box = page.evaluate(PLACE)
    page.wait_for_timeout(800)  # redraws: links, DOM widgets
    again = page.evaluate(PLACE)
    assert again == box, f"{name}: the view moved while placing it ({box} then {again})"
    page.wait_for_timeout(300)
    clip = {"x": box["x"] - MARGIN, "y": box["y"] - MARGIN, "width": box["width"] + 2 * MARGIN,
            "height": box["height"] + 2 * MARGIN}
    return page.screenshot(clip=clip)


def stamp(template: Path) -> bytes:
    """The JPEG comment that ties a thumbnail to the template text it was rendered from (tests check it)."""
    return f"sha256:{hashlib.sha256(template.read_bytes()).hexdigest()}".encode()


def to_thumbnail(png: bytes, comment: bytes) -> bytes:
    """Pads the screenshot to a square with the canvas colour, scales it to SIZE and encodes a JPEG."""
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    side = max(im.size)
    square = Image.new("RGB", (side, side), im.getpixel((2, 2)))
    square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    buf = io.BytesIO()
    square.resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=QUALITY, optimize=True,
                                                                 comment=comment)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shots", help="also keep the full-size screenshots (PNG) in this folder")
    args = ap.parse_args()

    from make_workflows import OUT, TEMPLATES
    from playwright.sync_api import sync_playwright
    from support.comfy_server import PACKAGE_DIR_NAME, ComfyServer

    base = Path(tempfile.mkdtemp(prefix="sana-thumbs-"))
    fresh_input(base / "input")
    server = ComfyServer(base)
    errors = []
    try:
        status, _ = server.post("/settings", SETTINGS)
        assert status == 200, status
        listed = set(server.get("/api/workflow_templates")[PACKAGE_DIR_NAME])
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 2800, "height": 2200})
            page.goto(server.url)
            page.wait_for_function("() => window.app?.graph && app.extensions?.length > 0", timeout=90000)
            for api_name, (name, *_) in TEMPLATES.items():
                assert name in listed, f"{name!r} is not among the host's templates {sorted(listed)}"
                png = shoot(page, PACKAGE_DIR_NAME, name)
                api = json.loads((OUT / "api" / f"{api_name}.json").read_text())
                errors += [f"{name}: {e}" for e in frontend_prompt_mismatches(page, api)]
                if args.shots:
                    Path(args.shots).mkdir(parents=True, exist_ok=True)
                    (Path(args.shots) / f"{name}.png").write_bytes(png)
                jpg = to_thumbnail(png, stamp(OUT / f"{name}.json"))
                (OUT / f"{name}.jpg").write_bytes(jpg)
                print(f"{name}.jpg: {len(jpg) // 1024} KB")
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    if errors:
        print("the frontend's prompt differs from the API twin:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
