"""The frontend's HTTP routes, GET /sana/<route> (also under /api/): /sana/bin and /sana/aspect are
``sana_core.bins``, the code SanaEmptyLatent itself runs, so the readout and the run cannot disagree; /sana/model is
a loader's variant and training resolution, read off its files without loading the weights, so the readout knows the
bin table before any run. ``register`` adds them to the running server."""

from __future__ import annotations

from collections.abc import Mapping

from ...sana_core import bins
from ...sana_core.errors import SanaError
from ...sana_core.load import is_video_transformer, peek_config, variant_name, video_variant_name
from ...sana_core.load.video_transformer import peek_video_config
from .folders import resolve_model

ROUTES = ("bin", "aspect", "model")  # GET /sana/<name> (also under /api/), each answered by route_answer
MODEL_LOADERS = {"SanaLoadTransformer": "diffusion_models", "SanaLoadPipeline": "diffusers"}  # node → model folder


def route_answer(route: str, query: Mapping[str, str]) -> tuple[int, dict]:
    """(HTTP status, JSON body) for GET /sana/bin?width&height&binning[&resolution],
    GET /sana/aspect?aspect&width&height[&resolution] and GET /sana/model?loader&name. A size the node would refuse is
    a normal answer (``valid`` false, with the node's error), and so is a model that cannot be read (``known``
    false); malformed parameters get 400."""
    if route == "model":
        return model_answer(query)
    try:
        width, height = int(query["width"]), int(query["height"])
        resolution = int(query["resolution"]) if query.get("resolution") else None
        if resolution is not None and resolution not in bins.BIN_TABLES:
            raise ValueError(f"resolution {resolution}: tables exist for {sorted(bins.BIN_TABLES)}")
        if route == "aspect":
            return 200, bins.aspect_size(query["aspect"], width, height, resolution)
        binning = query.get("binning", "true").lower() in ("true", "1")
    except (KeyError, ValueError, SanaError) as e:
        return 400, {"error": f"bad /sana/{route} query {dict(query)}: {e!r}"}
    try:
        return 200, {"valid": True, "binning": binning, **bins.plan(width, height, binning, resolution)}
    except SanaError as e:
        return 200, {"valid": False, "binning": binning, "error": str(e)}


def model_answer(query: Mapping[str, str]) -> tuple[int, dict]:
    """GET /sana/model?loader=<node class>&name=<its model widget>: {known: true, variant, resolution, video} as the
    loader will report them, or {known: false, error} when the files cannot tell (missing, unreadable, not Sana)."""
    loader, name = query.get("loader"), query.get("name")
    if loader not in MODEL_LOADERS or name is None:
        return 400, {"error": f"bad /sana/model query {dict(query)}: expected loader= one of {sorted(MODEL_LOADERS)} "
                              "and name="}
    try:
        path = resolve_model(MODEL_LOADERS[loader], name)
        if is_video_transformer(path):
            cfg = peek_video_config(path)
            return 200, {"known": True, "variant": video_variant_name(cfg), "resolution": cfg.resolution,
                         "video": True}
        cfg = peek_config(path)
    except (SanaError, OSError) as e:
        return 200, {"known": False, "error": str(e)}
    return 200, {"known": True, "variant": variant_name(cfg), "resolution": cfg.resolution, "video": False}


def register() -> None:
    """Serve the routes from the running server (``PromptServer.instance``); nothing without one (a script)."""
    try:
        import server
    except ImportError:  # ComfyUI's modules without its server
        return
    from aiohttp import web

    prompt_server = getattr(server.PromptServer, "instance", None)
    if prompt_server is None:
        return
    taken = {getattr(r, "path", None) for r in prompt_server.routes}
    for name in ROUTES:
        path = f"/sana/{name}"
        if path in taken:
            continue

        async def answer(request, name=name):
            status, body = route_answer(name, request.rel_url.query)
            return web.json_response(body, status=status)

        prompt_server.routes.get(path)(answer)
