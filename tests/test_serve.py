"""`make serve` starts ComfyUI with the pack and the frontend."""
import os
import signal
import subprocess
import time
import urllib.request

from comfy_harness import REPO, free_port


def test_make_serve_lists_the_pack_nodes_and_serves_the_frontend():
    port = free_port()
    proc = subprocess.Popen(["make", "-s", "serve", f"PORT={port}"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        deadline, info = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=10) as r:
                    info = r.read().decode()
                break
            except OSError:
                time.sleep(1)
        assert info is not None, f"make serve did not answer on port {port}"
        for node in ("SwDKSampler", "SwDSchedule", "SwDSampler", "SwDLatentUpscaleRenoise", "SwDLoraLoader"):
            assert f'"{node}"' in info
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert "<html" in r.read().decode().lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in out
