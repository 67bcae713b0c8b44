"""Every character of the pack's sources must encode in cp1252, the Windows console code page: what the pack prints
or logs (nodes, scripts, setup) must not raise UnicodeEncodeError there. Scans as comfy-test's `lint` (SYNTAX level)
does: every *.py under the pack outside hidden and environment folders, plus the shell scripts and the Makefile.
Non-cp1252 text that is not printed (e.g. workflow notes) is written with \\u escapes."""
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {"__pycache__", "venv", "node_modules", "site-packages", "lib", "Lib"}


def sources():
    files = [*ROOT.rglob("*.py"), *ROOT.rglob("*.sh"), ROOT / "Makefile", ROOT / ".ci" / "run"]
    for path in sorted(set(files)):
        parts = path.relative_to(ROOT).parts
        if path.name == "run" or not any(p in SKIP or p.startswith((".", "_env_")) for p in parts):
            yield path


def cp1252_problems(path: Path, root: Path = ROOT) -> list[str]:
    out = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for col, char in enumerate(line, 1):
            try:
                char.encode("cp1252")
            except UnicodeEncodeError:
                name = unicodedata.name(char, f"U+{ord(char):04X}")
                out.append(f"{path.relative_to(root)}:{line_no}:{col}: {name} (U+{ord(char):04X})")
    return out


def test_the_scan_finds_a_non_cp1252_character(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('print("2 \u2192 3")\n', encoding="utf-8")
    assert cp1252_problems(bad, tmp_path) == ["bad.py:1:10: RIGHTWARDS ARROW (U+2192)"]


def test_every_source_line_encodes_in_cp1252():
    scanned = list(sources())
    assert ROOT / "scripts" / "setup.sh" in scanned and ROOT / "nodes" / "sampler.py" in scanned
    problems = [p for path in scanned for p in cp1252_problems(path)]
    assert problems == [], "characters a Windows console cannot print:\n" + "\n".join(problems)
