"""The images install the versions the virtualenv (and so every other test) runs: the direct pins in
images/requirements/*.txt match requirements.txt, and constraints.txt pins every transitive package."""

from __future__ import annotations

import re
from pathlib import Path

REQ = Path(__file__).resolve().parents[2] / "images/requirements"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)$")


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_image_pins_match_the_virtualenv() -> None:
    venv = pins(REQ.parents[1] / "requirements.txt")
    constraints = pins(REQ / "constraints.txt")
    for f in sorted(REQ.glob("*.txt")):
        if f.name == "constraints.txt":
            continue
        lines = [line for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert all(PIN.match(line) for line in lines), f"{f.name}: every requirement is pinned with =="
        for name, version in pins(f).items():
            if name in venv:
                assert venv[name] == version, f"{f.name}: {name}=={version}, requirements.txt has {venv[name]}"
            assert constraints.get(name, version) == version, f"{f.name}: {name} differs from constraints.txt"


def test_constraints_cover_what_the_images_need() -> None:
    constraints = pins(REQ / "constraints.txt")
    for needed in ("ctranslate2", "onnxruntime", "tokenizers", "huggingface-hub", "av", "starlette", "pydantic"):
        assert needed in constraints, f"{needed} is not pinned in constraints.txt"
