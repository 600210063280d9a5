"""The web extension in a real browser: headless Chromium (Debian) driven by Playwright against the real ComfyUI
frontend served by the real host."""

import shutil

import pytest
from comfy_server import PACKAGE_DIR_NAME, ROOT, ComfyServer, comfy_dir
from fixtures_pipeline import install_model_folders
from sana_comfy.sana_core import bins

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CONSOLE: list[tuple[str, str, str]] = []  # (type, text, source url) of every console message and page error
pytestmark = [
    pytest.mark.skipif(not (comfy_dir() / "main.py").exists(), reason="ComfyUI not installed: scripts/setup_env.sh"),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed: apt-get install chromium"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_repo):
    base = tmp_path_factory.mktemp("browser")
    install_model_folders(tiny_repo, base / "models")
    srv = ComfyServer(base)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1600, "height": 1000})
        CONSOLE.clear()
        pg.on("console", lambda m: CONSOLE.append((m.type, m.text, m.location.get("url", ""))))
        pg.on("pageerror", lambda e: CONSOLE.append(("pageerror", str(e), "")))
        pg.goto(server.url)
        pg.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length > 0",
                             timeout=60000)
        yield pg
        pg.screenshot(path=str(tmp_path_factory.mktemp("shots") / "last.png"))
        browser.close()


def test_extension_registered_without_console_errors(page):
    page.wait_for_function("() => app.extensions.some(e => e.name === 'sana.comfyui.helpers')", timeout=30000)
    ours = [m for m in CONSOLE if m[0] in ("error", "pageerror")
            and (PACKAGE_DIR_NAME in m[2] or "sana" in m[1].lower())]
    assert not ours, ours


def _js_readout(page, width, height, binning=True):
    return page.evaluate("""async ([w, h, b]) => {
        const node = LiteGraph.createNode("SanaEmptyLatent");
        app.graph.add(node);
        const set = (name, v) => { const x = node.widgets.find(x => x.name === name); x.value = v; x.callback?.(v); };
        set("width", w); set("height", h); set("resolution_binning", b);
        await node.sanaPending;
        const out = {readout: node.sanaReadout, values: node.serialize().widgets_values};
        app.graph.remove(node);
        return out;
    }""", [width, height, binning])


def test_the_extension_carries_no_bin_table_and_parses_no_display_text(server):
    js = server.get(f"/extensions/{PACKAGE_DIR_NAME}/sana.js").decode()
    assert "fetchApi(`/sana/" in js and "sana_model" in js
    for copy in ('"0.25"', "1024, 256", "px ·/", "BIN_"):
        assert copy not in js, copy


@pytest.mark.parametrize("w,h", [(1000, 1000), (1920, 1080), (512, 2048), (3000, 2000)])
def test_empty_latent_readout_is_the_servers_bin(page, server, w, h):
    answer = server.get(f"/sana/bin?width={w}&height={h}&binning=true")
    table = bins.table_for_size(h, w)
    bh, bw = bins.nearest_bin(h, w, table)
    assert (answer["table"], answer["bin"]) == (table, [bh, bw])  # the server answers with the core's bins
    out = _js_readout(page, w, h)
    want = f"bin {bw}×{bh} ({table} px table) · latent {bw // 32}×{bh // 32}"
    assert out["readout"].startswith(want), out
    assert (f"crop {w}×{h}" in out["readout"]) == ((bh, bw) != (h, w)) == (answer["crop"] is not None)
    assert out["values"] == [w, h, 1, True]  # the UI-only preset widget is never saved


def test_readout_without_binning_flags_bad_sizes(page):
    assert _js_readout(page, 640, 480, False)["readout"] == "640×480 · latent 20×15 · no binning"
    assert _js_readout(page, 650, 480, False)["readout"] == "⚠ width and height must be multiples of 32 with binning off"


def test_aspect_preset_snaps_to_the_bin_table(page, server):
    out = page.evaluate("""async () => {
        const node = LiteGraph.createNode("SanaEmptyLatent");
        app.graph.add(node);
        const preset = node.widgets.find(x => x.name === "aspect_preset");
        preset.value = "16:9"; preset.callback("16:9");
        await node.sanaPending;
        const r = [node.widgets.find(x => x.name === "width").value, node.widgets.find(x => x.name === "height").value,
                   node.sanaReadout, node.serialize().widgets_values];
        app.graph.remove(node);
        return r;
    }""")
    answer = server.get("/sana/aspect?aspect=16:9&width=1024&height=1024")
    bh, bw = bins.nearest_bin(9, 16, 1024)
    assert out[:2] == [answer["width"], answer["height"]] == [bw, bh] == [1344, 768]
    assert out[2] == "bin 1344×768 (1024 px table) · latent 42×24" and out[3] == [1344, 768, 1, True]


def test_template_is_listed_opened_queued_and_its_image_appears(page, server):
    templates = server.get("/api/workflow_templates")
    assert sorted(templates[PACKAGE_DIR_NAME]) == sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACKAGE_DIR_NAME, exact=False).first.wait_for(timeout=30000)
    page.get_by_text(PACKAGE_DIR_NAME, exact=False).first.click()
    card = page.get_by_text("sana_pipeline_loader", exact=False).first
    card.wait_for(timeout=30000)
    card.click()
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'SanaLoadPipeline')", timeout=30000)
    page.keyboard.press("Escape")
    page.evaluate("""() => {
        for (const n of app.graph._nodes) {
            if (n.type === 'SanaEmptyLatent') { for (const [k, v] of [['width', 256], ['height', 256]]) {
                const w = n.widgets.find(x => x.name === k); w.value = v; w.callback?.(v); } }
            if (n.type === 'SanaSample') n.widgets.find(x => x.name === 'steps').value = 2;
        }
        return app.queuePrompt(0, 1);
    }""")
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'SaveImage' && n.imgs?.length > 0)",
                           timeout=180000)
    loader = page.evaluate("""() => { const n = app.graph._nodes.find(n => n.type === 'SanaLoadPipeline');
                                       return [n.sanaInfo, n.sanaResolution]; }""")
    assert loader[0] and "1024 px" in loader[0][0] and "Gemma-2" in loader[0][1] and "DC-AE" in loader[0][2]
    assert loader[1] == 1024  # from the loader's structured sana_model output
    # the connected model's table once its loader ran (256x256 alone would use the 512 px table)
    page.wait_for_function("""() => app.graph._nodes.find(n => n.type === 'SanaEmptyLatent').sanaReadout
                              === 'bin 1024×1024 (1024 px table) · latent 32×32 → crop 256×256'""", timeout=30000)
    saved = [im for h in server.get("/history").values() if h["status"]["status_str"] == "success"
             for o in h["outputs"].values() for im in o.get("images", [])]
    assert saved and (server.base / "output" / saved[-1]["subfolder"] / saved[-1]["filename"]).exists()
