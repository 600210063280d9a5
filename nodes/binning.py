"""The answers of GET /sana/bin and /sana/aspect, the frontend's readout: ``sana_core.bins.plan``, the function
SanaEmptyLatent itself calls, so the readout and the run cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping

from ..sana_core import bins
from ..sana_core.errors import SanaError

ROUTES = ("bin", "aspect")  # GET /sana/<name> (also under /api/), each answered by route_answer


def route_answer(route: str, query: Mapping[str, str]) -> tuple[int, dict]:
    """(HTTP status, JSON body) for GET /sana/bin?width&height&binning[&resolution] and
    GET /sana/aspect?aspect&width&height[&resolution]. A size the node would refuse is a normal answer
    (``valid`` false, with the node's error); malformed parameters get 400."""
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
