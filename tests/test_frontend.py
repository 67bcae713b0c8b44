"""The shipped workflows in the real ComfyUI frontend (headless Chromium driven by Playwright), and the node help
pages the frontend shows.

Runs its own ComfyUI server rather than the session's `comfy`, because it puts placeholder model files under the
workflows' real file names into the models folders (so that no "missing models" error is expected) and stores
frontend settings; neither may leak into other tests. Screenshots go to tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from comfy_harness import ComfyServer
from frontend_harness import CHROMIUM, QUIET_SETTINGS, Frontend, launch_chromium
from tiny_workflows import WORKFLOWS, load, write_input_image
from workflow_to_api import FRONTEND_ONLY, to_api

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
PACK = "swd-comfyui"  # the pack's folder name under custom_nodes in the test server
PACK_NODES = ["SwDKSampler", "SwDSchedule", "SwDSampler", "SwDLatentUpscaleRenoise", "SwDLoraLoader",
              "SwDTeacherSamples", "SwDDistillLoRA", "SwDSaveLoRA", "SwDTinyLoader"]
SHIPPED = {"unet_name": "swd-tiny-teacher.safetensors", "lora_name": "swd-tiny-4-steps.safetensors"}


def model_files(name: str) -> dict[str, str]:
    """file name -> models folder of every file the workflow's nodes name in properties.models."""
    return {m["name"]: m["directory"] for n in load(name)["nodes"] for m in n.get("properties", {}).get("models", [])}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium at /usr/bin/chromium: "
                    "apt-get update && apt-get install -y chromium  (make setup installs it when run as root)")
    srv = ComfyServer(tmp_path_factory.mktemp("frontend"))
    srv.prepare()
    write_input_image(srv.input_dir)  # the picture the img2img and inpainting workflows load (ComfyUI ships one)
    srv.start()
    srv.request("/settings", QUIET_SETTINGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server):
    with launch_chromium() as b:
        yield b


@pytest.fixture(scope="module")
def frontend(browser, server):
    fe = Frontend(browser, server)
    yield fe
    fe.context.close()


@pytest.mark.parametrize("name", [n for n in NAMES if model_files(n)])
def test_without_the_model_files_the_frontend_lists_exactly_the_missing_models_and_no_missing_node(name, frontend):
    frontend.reload()
    frontend.open(load(name), name)
    files = model_files(name)
    frontend.page.get_by_text("View details").first.click(timeout=10_000)
    frontend.page.get_by_text("Missing Models").first.wait_for(timeout=10_000)
    text = frontend.text()
    assert "Missing Node" not in text
    n, plural = len(files), "s" if len(files) != 1 else ""  # the frontend says "1 error found", "1\nError detected"
    assert f"{n} error{plural} found" in text or f"{n}\nError{plural} detected" in text
    for file in files:
        assert file in text
    assert frontend.page_errors == []


@pytest.mark.parametrize("name", [n for n in NAMES if not model_files(n)])
def test_a_tiny_demo_opens_with_its_loaders_offering_the_files_the_pack_ships(name, frontend):
    """Nothing to download: the pack registers its models/ folders on load, so the loaders list the tiny family."""
    frontend.reload()
    frontend.open(load(name), name)
    text = frontend.text()
    assert "Missing Models" not in text and "errors found" not in text and "Missing Node" not in text
    assert frontend.visible_dialogs() == [] and frontend.page_errors == []
    offered = frontend.page.evaluate("""() => app.graph.nodes.filter(n => ['UNETLoader', 'SwDLoraLoader'].includes(n.type))
        .map(n => n.widgets.find(w => ['unet_name', 'lora_name'].includes(w.name)))
        .map(w => [w.name, w.value, w.options.values])""")
    loaders = [(n["type"], n["widgets_values"][0]) for n in load(name)["nodes"]
               if n["type"] in ("UNETLoader", "SwDLoraLoader")]
    assert ("UNETLoader", SHIPPED["unet_name"]) in loaders and len(offered) == len(loaders)
    assert all(value == SHIPPED[widget] and value in values for widget, value, values in offered)


@pytest.fixture(scope="module")
def with_model_files(server, frontend):
    """Zero-byte placeholders for every file the workflows load; the page reloads to see the new combo options."""
    for name in NAMES:
        for file, folder in model_files(name).items():
            path = server.models_dir / folder / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    server.request("/settings", QUIET_SETTINGS)  # "View details" above opened the side panel, a stored setting
    frontend.reload()
    return frontend


@pytest.mark.parametrize("name", NAMES)
def test_workflow_opens_without_any_error_and_round_trips(name, with_model_files, server):
    fe = with_model_files
    workflow = load(name)
    fe.open(workflow, name)
    ARTIFACTS.mkdir(exist_ok=True)
    fe.screenshot(ARTIFACTS / f"{name}.png")
    assert fe.visible_dialogs() == []
    assert "errors found" not in fe.text() and "Missing Node" not in fe.text()
    assert fe.page_errors == []

    graph = fe.page.evaluate("() => app.graph.serialize()")
    loaded = {n["id"]: n for n in graph["nodes"]}
    for node in workflow["nodes"]:
        assert loaded[node["id"]]["type"] == node["type"]
        assert loaded[node["id"]].get("widgets_values") == node["widgets_values"], f"node {node['id']} {node['type']}"
    assert sorted(map(tuple, graph["links"])) == sorted(map(tuple, workflow["links"]))

    queued = fe.page.evaluate("async () => (await app.graphToPrompt()).output")
    ours = to_api(workflow, server.object_info())
    assert {k: (v["class_type"], v["inputs"]) for k, v in queued.items()} == \
           {k: (v["class_type"], v["inputs"]) for k, v in ours.items()}
    assert {str(n["id"]) for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY} == set(queued)


def _plain(markdown_line: str) -> str:
    """The text a markdown line renders to (links, emphasis and code marks removed)."""
    return re.sub(r"[*`]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown_line))


@pytest.mark.parametrize("node", PACK_NODES)
def test_every_pack_node_has_a_help_page_that_the_frontend_shows(node, frontend, server):
    """The frontend fetches a custom node's help from /extensions/<pack folder>/docs/<node>.md (after a per-locale
    <node>/<locale>.md) and shows it in the side panel's Info tab; the pack serves web/ through WEB_DIRECTORY."""
    info = server.object_info(node)[node]
    assert info["python_module"] == f"custom_nodes.{PACK}"
    status, content_type, text = frontend.page.evaluate("""async url => { const r = await fetch(url);
        return [r.status, r.headers.get('content-type') || '', await r.text()]; }""", f"/extensions/{PACK}/docs/{node}.md")
    assert status == 200 and "html" not in content_type
    assert text.startswith(f"# {info['display_name']}\n")
    for name in info["input_order"].get("required", []) + info["input_order"].get("optional", []):
        assert f"| {name}" in text or f"{name} /" in text or f"/ {name}" in text, f"{node}.md: input {name!r} unexplained"

    name = next(n for n in NAMES if any(x["type"] == node for x in load(n)["nodes"]))
    frontend.reload()
    frontend.open(load(name), name)
    node_id = next(x["id"] for x in load(name)["nodes"] if x["type"] == node)
    frontend.page.evaluate("id => app.canvas.selectNode(app.graph.getNodeById(id))", node_id)
    frontend.page.evaluate("() => app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', true)")
    frontend.page.get_by_role("tab", name="Info").first.click(timeout=10_000)
    first_paragraph = _plain(text.split("\n\n")[1].splitlines()[0])[:40]
    frontend.page.get_by_text(first_paragraph).first.wait_for(timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    frontend.page.screenshot(path=str(ARTIFACTS / f"help_{node}.png"))
    frontend.page.evaluate("() => app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', false)")


def test_the_workflows_are_offered_as_templates_with_thumbnails(server):
    """ComfyUI serves a pack's workflows/ folder as templates; the frontend shows <name>.jpg as the card image."""
    import urllib.request
    listed = server.get("/workflow_templates")
    assert sorted(listed[PACK]) == NAMES
    for name in NAMES:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK}/{name}.jpg", timeout=30) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert server.get(f"/api/workflow_templates/{PACK}/{name}.json") == load(name)
