"""The example workflows as templates: generated and current, each with its thumbnail, a Note that says which files go
where, titled prompts, only inputs a fresh ComfyUI ships; in the real frontend, the titles, the thumbnails it asks
for, a "sana" search, and the prompt it makes of each template, which must be the template's API twin. Workflows
saved by the newest frontend (tests/data, written by scripts/save_frontend_workflows.py) load in both frontends as
the prompt they were saved with, and run in the host."""

import hashlib
import importlib.util
import io
import json
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from support.comfy_server import (
    FRONTENDS,
    NEWEST_FRONTEND,
    PACKAGE_DIR_NAME,
    PINNED_FRONTEND,
    ROOT,
    FrontendServers,
    comfy_dir,
    has_frontend,
)

UI = sorted((ROOT / "example_workflows").glob("*.json"))
SAVED_BY = ROOT / "tests" / "data" / f"frontend-{NEWEST_FRONTEND}"  # saved by the newest frontend's own export
SAVED = sorted(p for p in SAVED_BY.glob("*.json") if not p.name.endswith(".api.json") and p.name != "EDITS.json")
HAS_COMFY = (comfy_dir() / "main.py").exists()
RESPONSES: list[tuple[int, str]] = []  # (status, url) of every response the page got
CONSOLE: list[tuple[str, str, str]] = []  # (type, text, source url) of every console message and page error


def _make_workflows():
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MW = _make_workflows()
API_NAME = {name: api for api, (name, *_) in MW.TEMPLATES.items()}  # template name -> API twin's name


def _ui(path):
    return json.loads(path.read_text())


def _api(name):
    return json.loads((ROOT / "example_workflows" / "api" / f"{API_NAME[name]}.json").read_text())


@pytest.mark.unit
def test_the_files_are_what_the_generator_writes():
    files = MW.render()
    assert sorted(files) == sorted(UI + list((ROOT / "example_workflows" / "api").glob("*.json")))
    stale = [p.name for p, text in files.items() if p.read_text() != text]
    assert not stale, f"run scripts/make_workflows.py: {stale}"
    assert len(UI) == 10


@pytest.mark.unit
@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_the_name_is_a_human_title(path):
    # The frontend shows the file name as the card's title and description and searches it: "Sana …", no snake_case.
    assert path.stem.startswith("Sana ") and "_" not in path.stem and path.stem in API_NAME


@pytest.mark.unit
@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_thumbnail_is_a_jpeg_of_the_graph(path):
    jpg = path.with_suffix(".jpg")  # the URL the frontend requests: /api/workflow_templates/<pack>/<name>.jpg
    assert jpg.exists(), f"no thumbnail {jpg.name}: run scripts/make_thumbnails.py"
    data = jpg.read_bytes()
    assert 5_000 < len(data) < 100_000, len(data)
    im = Image.open(io.BytesIO(data))
    im.verify()
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (640, 640)
    # rendered from this very template (scripts/make_thumbnails.py stamps the template's hash)
    assert im.info.get("comment") == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}".encode(), \
        f"{jpg.name} is stale: run scripts/make_thumbnails.py"
    px = np.asarray(im).astype(float)
    # a graph on the dark canvas: mostly dark, with node text and links (neither blank nor a photo-like image)
    assert np.median(px) < 70 and px.std() > 8, (np.median(px), px.std())


def _links_into(wf):
    """{(target node id, input name): source node id} of a UI workflow."""
    by_id = {lk[0]: lk for lk in wf["links"]}
    return {(n["id"], i["name"]): by_id[i["link"]][1] for n in wf["nodes"] for i in n.get("inputs", [])
            if i.get("link") is not None}


@pytest.mark.unit
@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_note_names_every_file_and_folder_and_prompts_are_titled(path):
    wf = _ui(path)
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    # each loader's folder and repository (from the README), and the input image, must be named; no other folder
    folder = {"SanaLoadTransformer": "models/diffusion_models/Sana_600M_1024px_diffusers/",
              "SanaLoadPipeline": "models/diffusers/Sana_600M_1024px_diffusers/",
              "SanaLoadTextEncoder": "models/text_encoders/gemma-2-2b-it/",
              "SanaLoadDCAE": "models/vae/dc-ae-f32c32-sana-1.1-diffusers/",
              "SanaLoraLoader": "models/loras/", "SanaLoadControlNet": "models/controlnet/",
              "LoadImage": "input/example.png"}
    repo = {"SanaLoadTransformer": "Efficient-Large-Model/Sana_600M_1024px_diffusers",
            "SanaLoadPipeline": "Efficient-Large-Model/Sana_600M_1024px_diffusers",
            "SanaLoadTextEncoder": "Efficient-Large-Model/gemma-2-2b-it",
            "SanaLoadDCAE": "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers",
            "SanaLoadControlNet": "Sana_600M_1024px_ControlNet_HED"}
    kinds = {n["type"] for n in wf["nodes"]}
    if "SanaDecodeVideo" in kinds:  # a SANA-Video repo: its own folder and repository, and the Comfy-format VAE
        video = "SANA-Video_2B_480p_diffusers"
        folder["SanaLoadPipeline"] = f"models/diffusers/{video}/"
        repo["SanaLoadPipeline"] = f"Efficient-Large-Model/{video}"
        assert "wan_2.1_vae.safetensors in models/vae/" in text
    for kind, where in folder.items():
        assert (where in text) == (kind in kinds), (kind, where)
        assert kind not in kinds or repo.get(kind, "") in text, (kind, repo[kind])
    # the prompt feeding a sampler's (or ControlNet's) positive input is titled so, and the negative one too
    links, nodes = _links_into(wf), {n["id"]: n for n in wf["nodes"]}
    prompts = {n["id"] for n in wf["nodes"] if n["type"] == "SanaEncodePrompt"}
    assert len(prompts) == 2
    for (target, name), src in links.items():
        if src in prompts and name in ("positive", "negative"):
            assert nodes[src].get("title") == f"{name.capitalize()} prompt", (target, name)
    assert {nodes[p].get("title") for p in prompts} == {"Positive prompt", "Negative prompt"}


@pytest.mark.unit
@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_api_twin_is_the_graph_without_the_note(path):
    wf, api = _ui(path), _api(path.stem)
    nodes = {str(n["id"]): n for n in wf["nodes"] if n["type"] != "Note"}
    assert set(api) == set(nodes)
    for nid, n in nodes.items():
        assert api[nid]["class_type"] == n["type"]
        assert api[nid]["_meta"]["title"] == n.get("title", n["type"])


@pytest.mark.unit
@pytest.mark.skipif(not HAS_COMFY, reason="ComfyUI not installed: run scripts/setup_env.sh")
@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_inputs_are_what_a_fresh_comfyui_ships_in_multiples_of_32(path):
    for n in _api(path.stem).values():
        if n["class_type"] == "LoadImage":
            f = comfy_dir() / "input" / n["inputs"]["image"]
            assert f.is_file(), f
            assert all(s % 32 == 0 for s in Image.open(f).size)


def _saved_api(path):
    return json.loads(path.with_name(path.stem + ".api.json").read_text())


@pytest.mark.unit
def test_the_saved_workflows_are_the_newest_frontends():
    assert [p.stem for p in SAVED] == ["Sana text to image, edited", "built in the frontend"]
    for path in SAVED:
        wf = _ui(path)
        assert wf["extra"]["frontendVersion"] == NEWEST_FRONTEND and wf["version"] == 0.4, path.name
        # the newest frontend writes each node's widgets by name too; both must agree with the node's inputs
        for node in wf["nodes"]:
            assert list(node["widgets_values_named"].values()) == node["widgets_values"], node
    edited = _saved_api(SAVED[0])
    assert edited["6"]["inputs"]["width"] == 256 and edited["7"]["inputs"]["seed"] == 7
    assert "KSampler" in {n["class_type"] for n in _saved_api(SAVED[1]).values()}


# --- in the real host and frontend ---

@pytest.fixture(scope="module")
def servers(host_base):
    """version -> the server serving that frontend; each starts once and runs to the end of the module."""
    pool = FrontendServers(lambda version: host_base(f"templates-{version}", inputs=True))
    yield pool
    pool.close()


def _server(servers, version):
    srv = servers(version)
    # no first-run dialog; the template browser sorted by relevance ("Newest" puts every dated core template first)
    assert srv.post("/settings", {"Comfy.TutorialCompleted": True, "Comfy.Templates.SortBy": "default"})[0] == 200
    return srv


@pytest.fixture(scope="module")
def server(servers):
    return _server(servers, PINNED_FRONTEND)


def _mask_of(server, image: str) -> np.ndarray:
    """Runs the inpaint template's mask nodes alone on `image`; the mask it gives SetLatentNoiseMask, as bools."""
    prompt = {k: v for k, v in _api("Sana inpaint").items() if k in ("6", "11", "14", "15", "16", "17")}
    prompt["6"]["inputs"]["image"] = image
    prompt["30"] = {"class_type": "MaskToImage", "inputs": {"mask": ["11", 0]}}
    prompt["31"] = {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": "mask/m"}}
    _, img = server.results(server.run(prompt))
    return img["31"][..., 0] > 127


@pytest.mark.host
def test_inpaint_mask_is_the_default_region_plus_what_the_user_paints(server):
    region = np.zeros((768, 768), bool)
    region[288:704, 224:544] = True  # x 256..512, y 320..672, grown 32 px
    assert (_mask_of(server, "example.png") == region).all()
    # a mask painted in the mask editor is the image's transparent part; it is added, grown the same way
    rgba = np.asarray(Image.open(server.base / "input" / "example.png").convert("RGBA")).copy()
    rgba[64:96, 608:672, 3] = 0
    Image.fromarray(rgba).save(server.base / "input" / "painted.png")
    painted = region.copy()
    painted[32:128, 576:704] = True
    assert (_mask_of(server, "painted.png") == painted).all()


@pytest.mark.host
def test_workflows_saved_by_the_newest_frontend_run_in_the_host(server):
    """The edited template gives the image of its API twin with the same edits; the graph built in the frontend
    (LoRA, Sana to MODEL, ComfyUI's KSampler) runs to an image that is not flat."""
    edits = json.loads((SAVED_BY / "EDITS.json").read_text())["Sana text to image"]
    twin = _api("Sana text to image")
    for node in twin.values():
        node["inputs"].update(edits.get(node["class_type"], {}))
    _, want = server.results(server.run(twin))
    _, got = server.results(server.run(_saved_api(SAVED[0])))
    assert want["9"].shape == (256, 256, 3) and np.array_equal(got["9"], want["9"])
    _, built = server.results(server.run(_saved_api(SAVED[1])))
    assert built["11"].shape == (256, 256, 3) and built["11"].std() > 1


@pytest.fixture(scope="module", params=FRONTENDS)
def page(request, servers, browser):
    """One page per frontend version (the pinned one shares its server with the tests above)."""
    if not has_frontend(request.param):
        pytest.skip(f"comfyui-frontend-package {request.param} not installed: scripts/setup_env.sh")
    server = _server(servers, request.param)
    pg = browser.new_page(viewport={"width": 1600, "height": 1000})
    RESPONSES.clear()
    CONSOLE.clear()
    pg.on("response", lambda r: RESPONSES.append((r.status, r.url)))
    pg.on("console", lambda m: CONSOLE.append((m.type, m.text, m.location.get("url", ""))))
    pg.on("pageerror", lambda e: CONSOLE.append(("pageerror", str(e), "")))
    pg.goto(server.url)
    pg.wait_for_function("() => window.app?.graph && app.extensions?.length > 0", timeout=90000)
    pg.server = server
    yield pg
    pg.close()


CARDS = """() => [...document.querySelectorAll('[data-testid^=template-workflow-]')].map(c => [
    c.dataset.testid.replace('template-workflow-', ''), c.querySelector('h3')?.textContent.trim(),
    [...c.querySelectorAll('img')].some(i => i.complete && i.naturalWidth > 0)])"""


def _errors_from_the_pack():
    return [m for m in CONSOLE if m[0] in ("error", "pageerror") and (PACKAGE_DIR_NAME in m[2] or "sana" in m[1].lower())]


def _cards(page) -> list[tuple[str, str, bool]]:
    """(name, shown title, thumbnail loaded) of every card in the template browser, in order."""
    return page.evaluate(CARDS)


@pytest.mark.browser
def test_browser_shows_titles_and_thumbnails_and_finds_ours_first(page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    names = sorted(p.stem for p in UI)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACKAGE_DIR_NAME, exact=True).first.click()
    try:  # every card of the pack's category shown, with its thumbnail loaded
        # a card below the fold loads its thumbnail when scrolled to: bring each unloaded one into view
        page.wait_for_function(f"""() => {{
            document.querySelectorAll('[data-testid^=template-workflow-]').forEach(c => {{
                if (![...c.querySelectorAll('img')].some(i => i.complete && i.naturalWidth > 0)) c.scrollIntoView();
            }});
            const c = ({CARDS})(); return c.length === {len(names)} && c.every(x => x[2]); }}""", timeout=30000)
    except PlaywrightTimeout:
        pass  # the assertions below say what is missing
    cards = _cards(page)
    assert sorted(c[0] for c in cards) == names
    assert all(title == name and loaded for name, title, loaded in cards), [
        c for c in cards if not (c[0] == c[1] and c[2])]
    base = f"{page.server.url}/api/workflow_templates/{PACKAGE_DIR_NAME}/"
    jpgs = {(s, unquote(u.removeprefix(base))) for s, u in RESPONSES if u.startswith(base) and u.endswith(".jpg")}
    assert {u.removesuffix(".jpg") for _, u in jpgs} == set(names) and {s for s, _ in jpgs} == {200}, jpgs
    # every template of every source: "sana" finds ours first (by relevance; the file name is all it searches)
    page.get_by_text("All Templates", exact=True).first.click()
    page.get_by_role("dialog").locator("input[placeholder^='Search']").fill("sana")  # "Search..." / "Search ..." (1.58)
    ours = json.dumps([f"template-workflow-{n}" for n in names])
    page.wait_for_function(f"() => {ours}.every(id => document.querySelector(`[data-testid='${{id}}']`))", timeout=30000)
    first = [c[0] for c in _cards(page)][:len(names)]
    assert sorted(first) == names, first
    page.keyboard.press("Escape")
    assert not _errors_from_the_pack()


@pytest.mark.browser
def test_frontend_makes_the_api_twin_of_each_template(page):
    for path in UI:
        got = page.evaluate("""async ([m, n]) => {
            const wf = await (await fetch(`/api/workflow_templates/${m}/${encodeURIComponent(n)}.json`)).json();
            await app.loadGraphData(wf, true, true, n, {openSource: "template"});
            return (await app.graphToPrompt()).output;
        }""", [PACKAGE_DIR_NAME, path.stem])
        want = _api(path.stem)
        assert {k: (v["class_type"], v["inputs"]) for k, v in got.items()} == \
            {k: (v["class_type"], v["inputs"]) for k, v in want.items()}, path.stem
        assert {k: v["_meta"]["title"] for k, v in got.items() if v["class_type"] == "SanaEncodePrompt"} == \
            {"4": "Positive prompt", "5": "Negative prompt"}
    assert not _errors_from_the_pack()


@pytest.mark.browser
def test_frontend_loads_the_saved_workflows_as_they_were_saved(page):
    """Each frontend opens the workflows the newest one saved: every node known, and the prompt it queues is the
    one saved with them, plus the inputs a node gained since, at their defaults."""
    info = page.server.get("/object_info")

    def default(kind, name):
        spec = info[kind]["input"]
        return (spec.get("required", {}).get(name) or spec["optional"][name])[1]["default"]

    for path in SAVED:
        got = page.evaluate("""async ([wf, name]) => {
            await app.loadGraphData(wf, true, true, name);
            const unknown = app.graph._nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type);
            return {unknown, output: (await app.graphToPrompt()).output};
        }""", [_ui(path), path.stem])
        assert got["unknown"] == [], path.name
        want = _saved_api(path)
        for nid, node in got["output"].items():
            for name in set(node["inputs"]) - set(want.get(nid, {}).get("inputs", {})):
                assert node["inputs"].pop(name) == default(node["class_type"], name), (path.name, nid, name)
        assert {k: (v["class_type"], v["inputs"]) for k, v in got["output"].items()} == \
            {k: (v["class_type"], v["inputs"]) for k, v in want.items()}, path.name
    assert not _errors_from_the_pack()
