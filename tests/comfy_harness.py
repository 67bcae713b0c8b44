"""Runs a real ComfyUI server as a subprocess and talks to it over HTTP on 127.0.0.1.

The server gets a temporary --base-directory whose custom_nodes folder links this pack and the test-only nodes
of tests/comfy_test_nodes, and whose models folders the fixtures fill with tiny seeded models.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def comfyui_path() -> Path:
    """The ComfyUI tree that `make setup` prepared (or COMFYUI_PATH)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return Path(env)
    recorded = REPO / ".comfyui" / "comfyui_path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    raise RuntimeError("ComfyUI not found: run `make setup` (or set COMFYUI_PATH to a ComfyUI checkout).")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptError(RuntimeError):
    """ComfyUI refused (validation) or failed (execution) a prompt; `.message` holds its text."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


@dataclass
class Result:
    prompt_id: str
    outputs: dict
    output_dir: Path

    def latent(self, node_id: str):
        """The tensor a SaveLatent node wrote (its "latent_tensor")."""
        from safetensors.torch import load_file
        info = self.outputs[node_id]["latents"][0]
        path = self.output_dir / info.get("subfolder", "") / info["filename"]
        return load_file(str(path))["latent_tensor"]

    def images(self, node_id: str) -> list[Path]:
        return [self.output_dir / i.get("subfolder", "") / i["filename"] for i in self.outputs[node_id]["images"]]


class ComfyServer:
    def __init__(self, base_dir: Path, port: int | None = None, comfy_dir: Path | None = None):
        self.base_dir = Path(base_dir)
        self.comfy_dir = Path(comfy_dir or comfyui_path())
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    def prepare(self, extra_custom_nodes=()):
        nodes = self.base_dir / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        for name, target in (("swd-comfyui", REPO), *extra_custom_nodes):
            link = nodes / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        for sub in ("diffusion_models", "loras", "checkpoints", "vae", "text_encoders"):
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 180.0, cpu: bool = True, extra_args=()):
        """cpu=False lets ComfyUI use a GPU (the demo with real models); the tests always run on the CPU. extra_args
        go to ComfyUI's command line (e.g. --cache-none)."""
        cmd = [sys.executable, str(self.comfy_dir / "main.py"), *(["--cpu"] if cpu else []), *extra_args,
               "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base_dir), "--disable-auto-launch",
               "--disable-api-nodes", "--database-url", "sqlite:///:memory:", "--preview-method", "latent2rgb"]
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # HTTP -----------------------------------------------------------------------------------------------------
    def request(self, path: str, body=None, method=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def get(self, path: str):
        return self.request(path)

    def object_info(self, node: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node}" if node else ""))

    def queue(self, prompt: dict) -> str:
        """Queue a prompt; raise PromptError if ComfyUI refuses any node (it runs the valid outputs of a
        partly invalid prompt and answers 200 with node_errors, which a test must not mistake for success)."""
        try:
            body = self.request("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise PromptError(_validation_message(body), body) from None
        if body.get("node_errors"):
            raise PromptError(_validation_message(body), body)
        return body["prompt_id"]

    def interrupt(self):
        self.request("/interrupt", {})

    def wait(self, prompt_id: str, timeout: float = 300.0) -> Result:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    messages = status.get("messages", [])
                    for kind, data in messages:
                        if kind == "execution_error":
                            raise PromptError(f"{data.get('node_type')}: {data.get('exception_message')}", data)
                        if kind == "execution_interrupted":
                            raise PromptError("interrupted", data)
                    return Result(prompt_id, entry.get("outputs", {}), self.output_dir)
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 300.0) -> Result:
        return self.wait(self.queue(prompt), timeout)

    def run_watching(self, prompt: dict, on_message=None, timeout: float = 300.0) -> tuple[list, int]:
        """Run a prompt while listening on the websocket. Returns (JSON messages of this prompt, number of binary
        preview frames). `on_message(server, msg)` sees each JSON message as it arrives (e.g. to interrupt)."""
        import asyncio

        import aiohttp

        async def go():
            client_id = uuid.uuid4().hex
            messages, previews = [], 0
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{self.url}/ws?clientId={client_id}") as ws:
                    async with session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                        body = await r.json()
                        if r.status != 200 or body.get("node_errors"):
                            raise PromptError(_validation_message(body), body)
                    prompt_id = body["prompt_id"]
                    while True:
                        msg = await ws.receive(timeout=timeout)
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            previews += 1
                            continue
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            raise RuntimeError(f"websocket closed: {msg.type}\n{self.log_tail()}")
                        data = json.loads(msg.data)
                        if data.get("data", {}).get("prompt_id") not in (prompt_id, None):
                            continue
                        messages.append(data)
                        if on_message is not None:
                            await asyncio.get_running_loop().run_in_executor(None, on_message, self, data)
                        kind, d = data["type"], data.get("data", {})
                        if kind in ("execution_error", "execution_interrupted", "execution_success"):
                            return messages, previews
                        if kind == "executing" and d.get("node") is None and d.get("prompt_id") == prompt_id:
                            return messages, previews

        return asyncio.run(go())


def _validation_message(body: dict) -> str:
    parts = [body.get("error", {}).get("message", "")]
    for node_id, err in (body.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            parts.append(f"node {node_id} ({err.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "\n".join(p for p in parts if p)
