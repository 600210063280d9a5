"""A real ComfyUI (0.3.75, from the project environment) started headless on 127.0.0.1 with this package linked
into custom_nodes and tiny weights in its model folders; stopped by its PID. It serves the frontend of its pins
(1.32.9) or another comfyui-frontend-package installed apart by scripts/setup_env.sh."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from . import ROOT

PACKAGE_DIR_NAME = "comfyui-sana"
PINNED_FRONTEND = "1.32.9"  # ComfyUI 0.3.75's requirements.txt, installed in the venv
NEWEST_FRONTEND = "1.58.1"  # installed apart, in .sana-env/frontend-1.58.1
FRONTENDS = (PINNED_FRONTEND, NEWEST_FRONTEND)


def env_dir() -> Path:
    return Path(os.environ.get("SANA_ENV", ROOT / ".sana-env"))


def comfy_dir() -> Path:
    return env_dir() / "ComfyUI"


def frontend_dir(version: str) -> Path | None:
    """The folder to put first on the server's path for a frontend version; None for the venv's own (the pins)."""
    return None if version == PINNED_FRONTEND else env_dir() / f"frontend-{version}"


def has_frontend(version: str) -> bool:
    folder = frontend_dir(version)
    return folder is None or (folder / f"comfyui_frontend_package-{version}.dist-info").is_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path, extra_args: tuple[str, ...] = (), frontend: Path | None = None):
        """frontend: a folder holding a comfyui_frontend_package (pip --target), served instead of the venv's."""
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        nodes = base / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        link = nodes / PACKAGE_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
               *extra_args]
        env = dict(os.environ)
        if frontend is not None:  # first on sys.path: its package and its version metadata win over the venv's
            env["PYTHONPATH"] = os.pathsep.join([str(frontend), *filter(None, [env.get("PYTHONPATH")])])
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy_dir(), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 180) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def frontend_version(self) -> str | None:
        """The version the server's log says it serves ("ComfyUI frontend version: X")."""
        found = re.search(r"frontend version: (\S+)", self.log())
        return found and found.group(1)

    def __enter__(self) -> ComfyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    # --- HTTP ---
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def get_status(self, path: str) -> tuple[int, dict]:
        """GET a JSON route: (status, body), error statuses included."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def post(self, path: str, data: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except json.JSONDecodeError:
                return e.code, {"raw": body.decode(errors="replace")}

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        if status != 200:
            raise AssertionError(f"prompt rejected ({status}): {json.dumps(body)[:2000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                if h[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return h[prompt_id]
            if self.proc.poll() is not None:
                raise AssertionError(f"server died:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def error(self, prompt: dict) -> dict:
        """Queue a prompt that must fail; its execution_error message (node_type, exception_message, …)."""
        hist = self.run(prompt)
        assert hist["status"]["status_str"] == "error", "the prompt should have failed"
        return [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]

    def results(self, hist: dict) -> tuple[dict, dict]:
        """A successful run's saved latents (SaveLatent nodes "<tag>_lat") and images (SaveImage nodes "<tag>_img"),
        by tag: latent tensors, and RGB images as int arrays."""
        import numpy as np
        from PIL import Image
        from safetensors.torch import load_file

        assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000] + self.log()[-3000:]
        out = self.base / "output"
        lat, img = {}, {}
        for node, o in hist["outputs"].items():
            for f in o.get("latents", []):
                lat[node.removesuffix("_lat")] = load_file(out / f["subfolder"] / f["filename"])["latent_tensor"]
            for f in o.get("images", []):
                img[node.removesuffix("_img")] = np.asarray(
                    Image.open(out / f["subfolder"] / f["filename"]).convert("RGB")).astype(int)
        return lat, img


class FrontendServers:
    """One ComfyServer per frontend version, each started when first asked for and all stopped by close()."""

    def __init__(self, make_base: Callable[[str], Path], extra_args: tuple[str, ...] = ()):
        self._make_base = make_base  # version -> a fresh base directory
        self._extra_args = extra_args
        self._running: dict[str, ComfyServer] = {}

    def __call__(self, version: str) -> ComfyServer:
        if version not in self._running:
            srv = ComfyServer(self._make_base(version), self._extra_args, frontend=frontend_dir(version))
            if srv.frontend_version() != version:
                srv.stop()
                raise RuntimeError(f"asked for frontend {version}, the server serves {srv.frontend_version()}")
            srv.frontend = version
            self._running[version] = srv
        return self._running[version]

    def close(self) -> None:
        for srv in self._running.values():
            srv.stop()
        self._running.clear()


class WsListener:
    """Collects websocket JSON events (and counts binary preview frames) for one client id, in a thread."""

    def __init__(self, server: ComfyServer):
        self.client_id = uuid.uuid4().hex
        self.events: list[dict] = []
        self.binary_frames: list[bytes] = []
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(server)), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("websocket did not connect")

    async def _main(self, server: ComfyServer) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}") as ws:
                self._ready.set()
                while not self._stop:
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self.events.append(json.loads(msg.data))
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        self.binary_frames.append(msg.data)
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break

    def of_type(self, kind: str) -> list[dict]:
        return [e["data"] for e in list(self.events) if e.get("type") == kind]

    def wait_progress(self, node: str, value: int, timeout: float = 120) -> list[dict]:
        """Wait until ``node`` reports progress ``value`` (or the timeout); its progress events so far."""
        end = time.time() + timeout
        while time.time() < end and not [e for e in self.of_type("progress") if e["node"] == node
                                          and e["value"] >= value]:
            time.sleep(0.05)
        return [e for e in self.of_type("progress") if e["node"] == node]

    def preview_images(self) -> list:
        """Every JPEG/PNG preview frame received, as (H, W, 3) uint8 arrays."""
        import io

        import numpy as np
        from PIL import Image

        out = []
        for frame in list(self.binary_frames):
            start = min((i for i in (frame.find(b"\xff\xd8"), frame.find(b"\x89PNG")) if i >= 0), default=-1)
            if start >= 0:
                out.append(np.asarray(Image.open(io.BytesIO(frame[start:])).convert("RGB")))
        return out

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
