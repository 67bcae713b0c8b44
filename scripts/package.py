"""Build the release zip exactly as `comfy node pack` does and list what ships: the files git tracks, minus the
patterns of .comfyignore, plus [tool.comfy] includes of pyproject.toml. Writes dist/<name>-<version>.zip.

    python3 scripts/package.py [--out DIR] [--list]

.comfyignore uses only anchored gitignore patterns here: "/dir/" leaves out a folder, "/file" one file.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for pattern in patterns:
        if not pattern.startswith("/") or "*" in pattern:
            sys.exit(f".comfyignore: {pattern!r} is not an anchored pattern (/dir/ or /file); keep them anchored.")
    return patterns


def ignored(path: str, patterns: list[str]) -> bool:
    return any(path.startswith(p[1:]) if p.endswith("/") else path == p[1:] for p in patterns)


def shipped_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = [i.strip("/") for i in config.get("tool", {}).get("comfy", {}).get("includes", [])]
    patterns = ignore_patterns()
    files = {f for f in tracked.decode().split("\0") if f and (ROOT / f).is_file()}
    keep = {f for f in files if not ignored(f, patterns) or any(f.startswith(i + "/") or f == i for i in includes)}
    for include in includes:  # included folders may hold untracked (built) files too
        keep |= {str(p.relative_to(ROOT)) for p in (ROOT / include).rglob("*") if p.is_file()}
    return sorted(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--list", action="store_true", help="only list the files, build nothing")
    args = parser.parse_args()
    files = shipped_files()
    if not args.list:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / f"{project['name']}-{project['version']}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(ROOT / f, f)
        print(f"{target} ({target.stat().st_size / 1024:.0f} KiB, {len(files)} files):")
    print("\n".join(files))


if __name__ == "__main__":
    main()
