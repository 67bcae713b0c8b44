"""The real ComfyUI frontend in headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Server-side user settings for a bare canvas: no template browser on the first visit, no side panel or minimap,
QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.RightSidePanel.IsOpen": False, "Comfy.Minimap.Visible": False,
                  "LiteGraph.Canvas.MinFontSizeForLOD": 0}  # full detail at any zoom, for screenshots


@contextlib.contextmanager
def launch_chromium():
    from playwright.sync_api import sync_playwright
    if not CHROMIUM.exists():
        raise RuntimeError("Debian's chromium is missing at /usr/bin/chromium: "
                           "apt-get update && apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Frontend:
    """One ComfyUI page in its own browser context; page_errors collects uncaught JavaScript exceptions."""

    def __init__(self, browser, server):
        self.browser, self.server, self.context = browser, server, None
        self.page_errors: list[str] = []
        self.reload()

    def reload(self):
        """A fresh browser context (no tabs or drafts the frontend kept in storage) on the ComfyUI page."""
        if self.context is not None:
            self.context.close()
        self.context = self.browser.new_context(viewport={"width": 1600, "height": 1000})
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.goto(self.server.url)
        self.page.wait_for_function("() => window.app && window.app.graph && window.app.vueAppReady",
                                    timeout=120_000)

    def open(self, workflow: dict, name: str):
        self.page_errors.clear()
        self.page.evaluate("([wf, name]) => app.loadGraphData(wf, true, true, name)", [workflow, name])
        time.sleep(1.5)  # the missing-node / missing-model checks run after loading

    def text(self) -> str:
        return self.page.evaluate("() => document.body.innerText")

    def visible_dialogs(self) -> list[str]:
        return self.page.evaluate("""() => Array.from(document.querySelectorAll(
            '[role=dialog], [role=alertdialog], .p-dialog, .p-toast-message'))
            .filter(e => e.offsetParent !== null || getComputedStyle(e).position === 'fixed')
            .map(e => e.innerText.trim()).filter(t => t)""")

    def fit_view(self):
        self.page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        time.sleep(0.3)

    def screenshot(self, path: Path, **kwargs):
        self.fit_view()
        self.page.screenshot(path=str(path), **kwargs)
