"""pytest set-up. ComfyUI's own modules (the real 0.3.75 of the project environment) are imported in-process and the
repo root as the package ``sana_comfy`` (support/inprocess.py). Each test is of one kind, with what it needs checked
here (support/kinds.py); the set-ups tests share are fixtures (support/fixtures.py); tests that need a server start
one (support/comfy_server.py)."""

from support import inprocess

inprocess.setup()

pytest_plugins = ("support.kinds", "support.fixtures")
