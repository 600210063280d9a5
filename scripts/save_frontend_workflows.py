"""Save workflows the way a user of today's frontend saves them, for tests/test_templates.py: a real headless
ComfyUI serving the newest frontend, Chromium driven by Playwright, and the frontend's own export commands
(Workflow → Export and Export (API)) writing the files. Two workflows:

- "template, edited": the text-to-image template opened from the template browser, four widgets changed;
- "built": a graph made node by node in the frontend (LoRA, Sana to MODEL, ComfyUI's KSampler), its widgets
  at the frontend's defaults but for size, steps, seed and prompts.

    python scripts/save_frontend_workflows.py    # writes tests/data/frontend-<version>/
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # script-only: the test harness and the tiny-model builder

TEMPLATE = "Sana text to image"
EDITS = {"SanaEmptyLatent": {"width": 256, "height": 256}, "SanaSample": {"steps": 4, "seed": 7}}

BUILD = """async () => {
    const add = (type, x, y) => { const n = LiteGraph.createNode(type); n.pos = [x, y]; app.graph.add(n); return n; };
    const link = (a, out, b, input) => a.connect(out, b, b.inputs.findIndex((i) => i.name === input));
    const set = (n, name, v) => n.widgets.find((w) => w.name === name).setValue(v, {node: n, canvas: app.canvas});
    const dit = add("SanaLoadTransformer", 40, 40), lora = add("SanaLoraLoaderModelOnly", 40, 220);
    const te = add("SanaLoadTextEncoder", 40, 400), vae = add("SanaLoadDCAE", 40, 560);
    const toModel = add("SanaToModel", 400, 220), pos = add("SanaEncodePrompt", 400, 360);
    const neg = add("SanaEncodePrompt", 400, 620), latent = add("SanaEmptyLatent", 400, 40);
    const sampler = add("KSampler", 800, 40), decode = add("SanaDecode", 1150, 40), save = add("SaveImage", 1400, 40);
    link(dit, 0, lora, "model"); link(lora, 0, toModel, "model"); link(dit, 0, latent, "model");
    link(te, 0, pos, "text_encoder"); link(te, 0, neg, "text_encoder");
    link(toModel, 0, sampler, "model"); link(pos, 0, sampler, "positive"); link(neg, 0, sampler, "negative");
    link(latent, 0, sampler, "latent_image"); link(vae, 0, decode, "vae"); link(sampler, 0, decode, "samples");
    link(decode, 0, save, "images");
    set(latent, "width", 256); set(latent, "height", 256); set(sampler, "steps", 4); set(sampler, "seed", 11);
    set(pos, "text", "a lighthouse on a cliff at dusk"); set(neg, "use_chi", false);
    set(save, "filename_prefix", "sana/built");
    await new Promise((r) => setTimeout(r, 300));
}"""


def _export(page, folder: Path, name: str) -> None:
    """Both of the frontend's exports of the open workflow, as it downloads them."""
    for command, suffix in (("Comfy.ExportWorkflow", ".json"), ("Comfy.ExportWorkflowAPI", ".api.json")):
        with page.expect_download() as download:
            page.evaluate("(c) => app.extensionManager.command.execute(c)", command)
        text = Path(download.value.path()).read_text()
        (folder / f"{name}{suffix}").write_text(json.dumps(json.loads(text), indent=1) + "\n")


def save(out: Path | None = None) -> Path:
    from playwright.sync_api import sync_playwright
    from support.comfy_server import NEWEST_FRONTEND, PACKAGE_DIR_NAME, ComfyServer, frontend_dir
    from support.pipeline import build_tiny_repo, install_model_folders

    out = out or ROOT / "tests" / "data" / f"frontend-{NEWEST_FRONTEND}"
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="sana-save-"))
    install_model_folders(build_tiny_repo(base / "tiny"), base / "models")
    server = ComfyServer(base, frontend=frontend_dir(NEWEST_FRONTEND))
    try:
        assert server.frontend_version() == NEWEST_FRONTEND, server.frontend_version()
        server.post("/settings", {"Comfy.TutorialCompleted": True, "Comfy.PromptFilename": False,
                                  "Comfy.Templates.SortBy": "default"})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
            page.goto(server.url)
            page.wait_for_function("() => window.app?.graph && app.extensions?.length > 0", timeout=90000)
            # the template, opened from the template browser and edited through its widgets
            page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
            page.get_by_text(PACKAGE_DIR_NAME, exact=True).first.click()
            page.locator(f"[data-testid='template-workflow-{TEMPLATE}']").click()
            page.wait_for_function("() => app.graph._nodes.some((n) => n.type === 'SanaSample')", timeout=30000)
            page.evaluate("""(edits) => { for (const [type, values] of Object.entries(edits)) {
                const n = app.graph._nodes.find((m) => m.type === type);
                for (const [k, v] of Object.entries(values))
                    n.widgets.find((w) => w.name === k).setValue(v, {node: n, canvas: app.canvas}); } }""", EDITS)
            _export(page, out, f"{TEMPLATE}, edited")
            # a graph built node by node
            page.evaluate("() => app.extensionManager.command.execute('Comfy.NewBlankWorkflow')")
            page.evaluate(BUILD)
            _export(page, out, "built in the frontend")
            browser.close()
    finally:
        server.stop()
    (out / "EDITS.json").write_text(json.dumps({TEMPLATE: EDITS}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    print(f"saved → {save()}")
