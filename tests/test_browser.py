"""The web extension in a real browser: headless Chromium (Debian) driven by Playwright against the real ComfyUI
frontend served by the real host, every check on two frontends (ComfyUI 0.3.75's pinned one and the newest on the
registry) and in both renderers (the classic canvas and Nodes 2.0, switched by the frontend's own setting).
Screenshots of each go to the folder printed at the end of the module."""

import json

import pytest
from sana_comfy.sana_core import bins
from support.comfy_server import FRONTENDS, PACKAGE_DIR_NAME, FrontendServers, has_frontend

CONSOLE: list[tuple[str, str, str]] = []  # (type, text, source url) of every console message and page error
MODEL = "Sana_600M_1024px_diffusers"  # the tiny pipeline, trained at 1024 px
UNKNOWN = "model table unknown until the loader runs"
RENDERERS = ("classic", "nodes2")
pytestmark = pytest.mark.browser

# Page helpers: what a node's inputs show (Nodes 2.0: its DOM rows; classic: the widget values the canvas draws), the
# prompt the frontend would queue, and a widget changed the way the frontend's own widgets change it.
HELPERS = """() => {
    if (!window.sanaT) {  // a use of an API the frontend marks deprecated, by the pack's code: a console error
        const seen = new Set();
        LiteGraph.alwaysRepeatWarnings = true;  // every use reported, not only each message's first
        LiteGraph.onDeprecationWarning.splice(0, Infinity, (message, source) => {
            if (!seen.has(message)) { seen.add(message); console.warn(message, source ?? ""); }  // as before
            const caller = new Error().stack.split("\\n").slice(1)
                .find((frame) => frame.includes("://") && !frame.includes("/assets/"));  // the frontend's own
            if (caller?.includes("/extensions/comfyui-sana/")) console.error(`sana: deprecated ${message} ${caller}`);
        });
    }
    const vue = () => !!LiteGraph.vueNodesMode;
    const nodeEl = (n) => document.querySelector(`[data-node-id="${n.id}"]`);
    window.sanaT = {
        vue,
        nodeEl,
        node: (type) => app.graph._nodes.find((n) => n.type === type),
        shown(n) {
            if (!vue()) return Object.fromEntries(n.widgets.filter((w) => w.type !== "sana_text")
                .map((w) => [w.name, w.value]));
            const out = {};
            for (const row of nodeEl(n)?.querySelectorAll(".lg-node-widget") ?? []) {
                if (row.querySelector(".sana-text")) continue;
                const name = row.innerText.split("\\n")[0].trim();
                const toggle = row.querySelector("input[type=checkbox]");  // 1.32: a checkbox; 1.58: role=switch
                const toggleSwitch = row.querySelector("[role=switch]");
                const input = row.querySelector("input:not([type=checkbox])");
                const combo = row.querySelector("[role=combobox]");
                out[name] = toggle ? toggle.checked : toggleSwitch ? toggleSwitch.getAttribute("aria-checked") === "true"
                    : input ? (isNaN(+input.value) ? input.value : +input.value) : combo?.innerText.trim();
            }
            return out;
        },
        async queued(n) { return (await app.graphToPrompt()).output[n.id].inputs; },
        set(n, name, v) { n.widgets.find((w) => w.name === name).setValue(v, {node: n, canvas: app.canvas}); },
        // the text widget's element: visible, inside the node's width, not clipped
        text(n, name) {
            const el = n.widgets.find((w) => w.name === name)?.element;
            if (!el?.isConnected) return null;
            const box = el.getBoundingClientRect();  // on screen; clientHeight and friends: unscaled
            const nodeRight = vue() ? nodeEl(n).getBoundingClientRect().right
                : app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], 0])[0]
                  + app.canvas.canvas.getBoundingClientRect().left;
            return {text: el.textContent, visible: box.width > 0 && box.height > 0, lines: Math.round(el.clientHeight / 16),
                    inside: box.right <= nodeRight + 1 && el.scrollWidth <= el.clientWidth + 1
                            && el.scrollHeight <= el.parentElement.clientHeight + 1};
        },
    };
}"""


@pytest.fixture(scope="module")
def servers(host_base):
    """version -> the server serving that frontend; each starts once and runs to the end of the module."""
    pool = FrontendServers(lambda version: host_base(f"browser-{version}"))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory, pytestconfig):
    folder = tmp_path_factory.mktemp("browser_shots")
    yield folder
    with pytestconfig.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nbrowser screenshots (both frontends, both renderers): {folder}")


def _ready(pg):
    pg.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.length > 0", timeout=60000)
    pg.evaluate(HELPERS)


@pytest.fixture(scope="module", params=[(f, r) for f in FRONTENDS for r in RENDERERS],
                ids=[f"{f}-{r}" for f in FRONTENDS for r in RENDERERS])
def page(request, servers, browser, shots):
    """One page per frontend and renderer; Nodes 2.0 is the frontend's setting Comfy.VueNodes.Enabled, set before the
    page loads. The pages of one frontend share its server."""
    frontend, renderer = request.param
    if not has_frontend(frontend):
        pytest.skip(f"comfyui-frontend-package {frontend} not installed: scripts/setup_env.sh")
    server = servers(frontend)
    assert server.post("/settings", {"Comfy.TutorialCompleted": True,
                                     "Comfy.VueNodes.Enabled": renderer == "nodes2"})[0] == 200
    pg = browser.new_page(viewport={"width": 1600, "height": 1000})
    CONSOLE.clear()
    pg.on("console", lambda m: CONSOLE.append((m.type, m.text, m.location.get("url", ""))))
    pg.on("pageerror", lambda e: CONSOLE.append(("pageerror", str(e), "")))
    pg.goto(server.url)
    _ready(pg)
    assert pg.evaluate("() => app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") == (renderer == "nodes2")
    pg.renderer, pg.server = renderer, server
    pg.shot = lambda name: pg.screenshot(path=str(shots / f"{frontend}-{renderer}-{name}.png"))
    yield pg
    pg.shot("last")
    pg.close()


@pytest.fixture
def server(page):
    """The server behind the page."""
    return page.server


def _fresh(page, *types, model=MODEL):
    """A new graph holding one node of each type (the first two linked when both take/give a SANA_MODEL); a loader
    picks ``model`` (the first in its list, which a fresh node shows, may be the SANA-Video repo)."""
    return page.evaluate("""async ([types, model]) => {
        app.graph.clear();
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 50)));  // as a user: drawn empty first
        const nodes = types.map((t, i) => {
            const n = LiteGraph.createNode(t);
            const pick = n.widgets?.find((w) => w.name === "model_name" || w.name === "pipeline");
            if (pick) pick.value = model;
            n.pos = [80 + 380 * i, 120];
            app.graph.add(n);
            return n;
        });
        if (nodes.length === 2) nodes[0].connect(0, nodes[1], nodes[1].inputs.findIndex((i) => i.name === "model"));
        await new Promise((r) => setTimeout(r, 100));
        const drawn = () => !sanaT.vue() || nodes.every((n) => sanaT.nodeEl(n));
        while (!drawn()) await new Promise((r) => setTimeout(r, 50));
        await Promise.all(nodes.map((n) => n.sanaPending));
        return nodes.map((n) => n.id);
    }""", [list(types), model])


def _latent(page, **values):
    """Sets SanaEmptyLatent's widgets; its readout, what its inputs show, what is queued, and its widgets_values."""
    return page.evaluate("""async (values) => {
        const n = sanaT.node("SanaEmptyLatent");
        for (const [k, v] of Object.entries(values)) sanaT.set(n, k, v);
        await n.sanaPending;
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 50)));
        return {readout: n.sanaReadout, shown: sanaT.shown(n), queued: await sanaT.queued(n),
                values: n.serialize().widgets_values, text: sanaT.text(n, "sana_readout")};
    }""", values)


def _back(w, h, bh, bw):
    """The readout's way back from the bin to the request, computed here as bins.resize_and_crop does."""
    ratio = max(h / bh, w / bw)
    scale = "" if ratio == 1 else f"{'upscale' if ratio > 1 else 'downscale'} {float(f'{ratio:.2f}'):g}× "
    cropped = (int(bh * ratio), int(bw * ratio)) != (h, w)
    return f"{scale}{'and ' if scale and cropped else ''}{'crop' if cropped else 'to'} {w}×{h}"


def _same(shown, queued):
    return {k: shown[k] for k in queued if k in shown} == {k: v for k, v in queued.items() if k in shown}


def _errors_from_the_pack():
    return [m for m in CONSOLE if m[0] in ("error", "pageerror") and (PACKAGE_DIR_NAME in m[2] or "sana" in m[1].lower())]


def test_extension_registered_without_console_errors(page):
    page.wait_for_function("() => app.extensions.some(e => e.name === 'sana.comfyui.helpers')", timeout=30000)
    assert not _errors_from_the_pack()


def test_the_extension_carries_no_bin_table_and_parses_no_display_text(server):
    js = server.get(f"/extensions/{PACKAGE_DIR_NAME}/sana.js").decode()
    assert "fetchApi(`/sana/" in js and "sana_model" in js
    for copy in ('"0.25"', "1024, 256", "px ·/", "BIN_"):
        assert copy not in js, copy


@pytest.mark.parametrize("w,h", [(1000, 1000), (1920, 1080), (512, 2048), (3000, 2000)])
def test_empty_latent_readout_is_the_servers_bin_and_shown(page, server, w, h):
    answer = server.get(f"/sana/bin?width={w}&height={h}&binning=true")
    table = bins.table_for_size(h, w)
    bh, bw = bins.nearest_bin(h, w, table)
    assert (answer["table"], answer["bin"]) == (table, [bh, bw])  # the server answers with the core's bins
    _fresh(page, "SanaEmptyLatent")
    out = _latent(page, width=w, height=h, resolution_binning=True)
    back = f" → {_back(w, h, bh, bw)}" if (bh, bw) != (h, w) else ""
    assert out["readout"] == f"bin {bw}×{bh} ({table} px table) · latent {bw // 32}×{bh // 32}{back}", out
    assert out["text"]["text"] == out["readout"] and out["text"]["visible"] and out["text"]["inside"], out
    assert _same(out["shown"], out["queued"]) and out["queued"]["width"] == w, out
    assert out["values"] == [w, h, 1, True]  # the UI-only widgets are never saved
    if (w, h) == (1920, 1080):
        assert out["readout"].endswith("→ upscale 1.43× and crop 1920×1080")


def test_readout_without_binning_flags_bad_sizes(page):
    _fresh(page, "SanaEmptyLatent")
    assert _latent(page, width=640, height=480, resolution_binning=False)["readout"] == \
        "640×480 · latent 20×15 · no binning"
    assert _latent(page, width=650)["readout"] == "⚠ width and height must be multiples of 32 with binning off"


def _pick_preset(page, preset):
    """Picks an aspect preset as a user does: the combo's own setValue on the canvas, its menu in Nodes 2.0."""
    if page.renderer == "classic":
        page.evaluate("(p) => sanaT.set(sanaT.node('SanaEmptyLatent'), 'aspect_preset', p)", preset)
    else:
        node = page.evaluate("() => sanaT.node('SanaEmptyLatent').id")
        row = page.locator(f'[data-node-id="{node}"] .lg-node-widget', has_text="aspect_preset")
        row.locator("[role=combobox]").click()
        page.get_by_role("option", name=preset, exact=True).click()
    page.wait_for_function("(p) => sanaT.node('SanaEmptyLatent').widgets.find(w => w.name === 'aspect_preset')"
                           ".value === p", arg=preset)


def _type_width(page, value):
    """Edits width as a user does: the number widget's setValue on the canvas, typing into its field in Nodes 2.0."""
    if page.renderer == "classic":
        page.evaluate("(v) => sanaT.set(sanaT.node('SanaEmptyLatent'), 'width', v)", value)
    else:
        node = page.evaluate("() => sanaT.node('SanaEmptyLatent').id")
        field = page.locator(f'[data-node-id="{node}"] .lg-node-widget', has_text="width").locator("input")
        box = field.bounding_box()  # a click where the field is (1.58 lays a drag-to-scrub layer over the input)
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.keyboard.press("Control+a")
        page.keyboard.type(str(value))
        page.keyboard.press("Enter")


def test_aspect_preset_shows_what_is_queued_and_goes_back_to_custom(page, server):
    _fresh(page, "SanaEmptyLatent")
    _pick_preset(page, "16:9")
    out = _latent(page)
    answer = server.get("/sana/aspect?aspect=16:9&width=1024&height=1024")
    bh, bw = bins.nearest_bin(9, 16, 1024)
    assert [answer["width"], answer["height"]] == [bw, bh] == [1344, 768]
    assert out["shown"]["width"] == out["queued"]["width"] == 1344, out  # the screen and the run agree
    assert out["shown"]["height"] == out["queued"]["height"] == 768, out
    assert out["shown"]["aspect_preset"] == "16:9" and _same(out["shown"], out["queued"]), out
    assert out["readout"] == "bin 1344×768 (1024 px table) · latent 42×24" and out["values"] == [1344, 768, 1, True]
    page.shot("preset")
    _type_width(page, 1000)  # a manual edit: the preset no longer holds
    page.wait_for_function("() => sanaT.shown(sanaT.node('SanaEmptyLatent')).aspect_preset === 'custom'")
    out = _latent(page)
    assert out["shown"]["width"] == out["queued"]["width"] == 1000 and out["shown"]["aspect_preset"] == "custom", out


def test_saved_workflow_holds_only_the_nodes_own_widgets_and_inputs(page, server):
    _fresh(page, "SanaLoadTransformer", "SanaEmptyLatent")
    _pick_preset(page, "3:2")
    wf = page.evaluate("async () => (await app.graphToPrompt()).workflow")
    defs = server.get("/object_info")
    for node in wf["nodes"]:
        spec = defs[node["type"]]["input"]
        inputs = {**spec["required"], **spec.get("optional", {})}
        widgets = [k for k, (kind, *_) in inputs.items() if isinstance(kind, list) or kind in
                   ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        assert len(node["widgets_values"]) == len(widgets), node
        assert {i["name"] for i in node.get("inputs", [])} <= set(inputs), node
    saved = json.dumps(wf)
    for extra in ("aspect_preset", "sana_readout", "sana_info", "3:2", "px table", " · "):
        assert extra not in saved, extra


def _save_and_reload(page):
    """A page reload: the frontend saves the workflow (its change tracker) and restores it on load."""
    page.evaluate("() => app.extensionManager.workflow.activeWorkflow.changeTracker.checkState()")
    page.reload()
    _ready(page)


def test_readout_names_a_sana_video_model(page):
    """A SANA-Video loader connected to Sana Empty Latent: the readout says where its latents come from, read off
    the files before any run, instead of a bin table."""
    _fresh(page, "SanaLoadTransformer", "SanaEmptyLatent", model="SANA-Video_2B_480p_diffusers")
    state = _latent(page, width=832, height=480)
    assert state["readout"] == "a SANA-Video model: its latents come from Sana Empty Video Latent", state


def test_readout_after_reload_uses_the_loaders_model_table(page, server):
    assert server.get(f"/sana/model?loader=SanaLoadTransformer&name={MODEL}") == {
        "known": True, "variant": "Sana (custom: 10 layers, hidden 16)", "resolution": 1024, "video": False}
    _fresh(page, "SanaLoadTransformer", "SanaEmptyLatent")
    _latent(page, width=2048, height=2048)
    _save_and_reload(page)  # no loader has run: what the server read off the files
    page.wait_for_function("() => sanaT.node('SanaEmptyLatent')?.sanaReadout")
    out = _latent(page)
    # alone, 2048x2048 would use the 2048 px table; the model's is 1024 px, as the server will make it
    assert out["readout"] == "bin 1024×1024 (1024 px table) · latent 32×32 → upscale 2× to 2048×2048", out
    assert out["text"]["visible"] and out["text"]["inside"] and out["text"]["lines"] >= 2, out  # wrapped
    assert out["shown"]["width"] == out["queued"]["width"] == 2048
    loader = page.evaluate("() => sanaT.text(sanaT.node('SanaLoadTransformer'), 'sana_info')")
    assert loader["text"] == "Sana (custom: 10 layers, hidden 16) · 1024 px" and loader["inside"], loader
    page.shot("reload")
    # a model the server cannot read: the readout says so rather than guess
    page.evaluate("""async () => { const n = sanaT.node('SanaLoadTransformer');
                                   n.widgets[0].value = 'missing.safetensors'; n.sanaRefresh(); }""")
    page.wait_for_function("(u) => sanaT.node('SanaEmptyLatent').sanaReadout === u", arg=UNKNOWN)


def test_template_queued_loader_lines_wrap_and_readout_follows_the_model(page, server):
    seed = {"classic": 1, "nodes2": 2}[page.renderer]  # a new sample and a loader that really runs, per renderer
    dtype = {"classic": "auto", "nodes2": "fp32"}[page.renderer]
    width = page.evaluate("""async ([pack, name, seed, dtype]) => {
        const wf = await (await fetch(`/api/workflow_templates/${pack}/${encodeURIComponent(name)}.json`)).json();
        for (const n of wf.nodes) {
            if (n.type === "SanaLoadPipeline") { n.size = [300, n.size[1]]; n.widgets_values[1] = dtype; }
            if (n.type === "SanaEmptyLatent") n.widgets_values.splice(0, 2, 256, 256);
            if (n.type === "SanaSample") n.widgets_values.splice(0, 3, seed, "fixed", 2);
        }
        await app.loadGraphData(wf, true, true, name);
        await new Promise((r) => setTimeout(r, 300));
        await app.queuePrompt(0, 1);
        return sanaT.node("SanaLoadPipeline").size[0];  // as loaded (Nodes 2.0 scales a classic layout up)
    }""", [PACKAGE_DIR_NAME, "Sana text to image (one loader node)", seed, dtype])
    page.wait_for_function("""() => { const n = sanaT.node("SaveImage");  // the image shown
                                      return sanaT.vue() ? !!sanaT.nodeEl(n).querySelector("img") : n.imgs?.length; }""",
                           timeout=180000)
    page.wait_for_function("() => sanaT.node('SanaLoadPipeline').sanaRan")
    page.wait_for_timeout(300)
    loader = page.evaluate("""() => { const n = sanaT.node('SanaLoadPipeline');
                                      return {width: n.size[0], info: sanaT.text(n, 'sana_info')}; }""")
    lines = loader["info"]["text"].split("\n")
    assert "1024 px" in lines[0] and "Gemma-2" in lines[1] and "DC-AE" in lines[2], loader
    assert loader["width"] == width and loader["info"]["inside"] and loader["info"]["lines"] > 3, loader  # wrapped
    # the connected model's table (256x256 alone would use the 512 px table)
    page.wait_for_function("""() => sanaT.node('SanaEmptyLatent').sanaReadout
                              === 'bin 1024×1024 (1024 px table) · latent 32×32 → downscale 0.25× to 256×256'""",
                           timeout=30000)
    page.shot("run")
    saved = [im for h in server.get("/history").values() if h["status"]["status_str"] == "success"
             for o in h["outputs"].values() for im in o.get("images", [])]
    assert saved and (server.base / "output" / saved[-1]["subfolder"] / saved[-1]["filename"]).exists()
    # a tab switch away and back makes new nodes without the run's report: the files still tell the model
    for command in ("Workspace.PreviousOpenedWorkflow", "Workspace.NextOpenedWorkflow"):
        page.evaluate("(c) => app.extensionManager.command.execute(c)", command)
    page.wait_for_function("""() => sanaT.text(sanaT.node('SanaLoadPipeline'), 'sana_info')?.text
                              === 'Sana (custom: 10 layers, hidden 16) · 1024 px'""", timeout=30000)
    page.wait_for_function("""() => sanaT.node('SanaEmptyLatent').sanaReadout
                              === 'bin 1024×1024 (1024 px table) · latent 32×32 → downscale 0.25× to 256×256'""",
                           timeout=30000)


def test_no_console_error_from_the_pack_in_the_whole_session(page):
    """The module's last test on each page: no error and no deprecated frontend API from the pack in any test."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 100)))")
    assert not _errors_from_the_pack()
