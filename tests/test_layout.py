"""The layout is the architecture: these checks keep it so."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import actors

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted((ROOT / "actors" / "core").rglob("*.py"))
# What the pure core may import besides itself: the standard library's pure parts, attrs, numpy, yaml.
ALLOWED_CORE = {"__future__", "attrs", "numpy", "yaml", "math", "re", "hashlib", "random", "typing",
                "collections", "functools", "itertools", "operator", "fnmatch", "json", "contextlib",
                "reprlib", "enum", "dataclasses", "string", "abc", "bisect", "heapq", "statistics", "hmac",
                "secrets", "datetime",
                "pathlib"}  # path arithmetic only: the checks below refuse any file access


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_no_trio_no_io_and_no_clock(path: Path) -> None:
    roots = imported_roots(path) - {"actors"}
    assert roots <= ALLOWED_CORE, f"{path.name} imports {sorted(roots - ALLOWED_CORE)}"
    source = path.read_text()
    for forbidden in ("from actors.storage", "from actors.serving", "from actors.web", "time.time(",
                      "time.monotonic(", "open(", ".read_text(", ".read_bytes(", ".write_", ".exists(", ".stat(",
                      ".iterdir(", ".mkdir(", ".unlink("):
        assert forbidden not in source, f"{path.name} uses {forbidden}"


def test_importing_the_core_does_not_load_the_runtime() -> None:
    code = ("import sys, actors.core.switch_policy, actors.core.versions, actors.core.commands; "
            "print(sorted(m for m in ('trio', 'redis', 'tflite_runtime', 'quart') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_actor_is_re_exported_with_its_run() -> None:
    actor_modules = sorted(p.stem for p in (ROOT / "actors").glob("*.py")
                           if p.stem not in ("__init__", "mailbox", "lifecycle"))
    for name in actor_modules:
        module = importlib.import_module(f"actors.{name}")
        assert getattr(actors, f"run_{name}") is module.run
    assert set(actors.__all__) <= set(dir(actors))


def test_app_py_only_wires() -> None:
    source = (ROOT / "app.py").read_text()
    assert len(source.splitlines()) < 400
    assert "@app." not in source and "quart" not in source.lower().split("actors.web")[0]
