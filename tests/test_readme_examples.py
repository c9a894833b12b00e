"""The README's shell examples, run as written against the real service.

The quick-start and switching blocks are marked ``<!-- example: NAME ... -->`` in README.md.
Each command runs in bash in a scratch copy of the project layout (``conf/``, ``models/``,
``.admin_key``); only the ports (``localhost:8000``, ``localhost:8001``), the interpreter
(``.venv/bin/python``, ``.venv/bin/model-router``) and ``make run &`` (the test starts the same
command itself) are substituted. Another command ending in ``&`` runs in the background (the
feed follower): the test waits until it is subscribed, and at the end until it exits. A ``# {...}``
comment right after a command is its answer: every field shown must be in the real answer
with the same value (numbers to the digits shown; ``"…"`` is any string, ``"sw-…"`` any string
starting ``sw-``; ``, …}`` means more fields follow), and each curl must answer 2xx.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actors.build.demo_models import build_demo_repository
from actors.storage.version_upload import MAX_UPLOAD_BYTES
from actors.web.errors import MAX_BODY_BYTES
from tests.conftest import free_port
from tests.test_app_process import LogReader

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
STATUS = "@@status "
# Values that differ on every run; only their presence and type are checked.
VOLATILE = frozenset({"latency_ms", "timestamp", "loaded_at", "created_at", "updated_at", "uptime_s"})


@attrs.frozen
class Step:
    """One shell command of an example and the answer the README shows for it (if any)."""

    command: str
    expected: Any = None


def example_block(name: str) -> str:
    """The code block after ``<!-- example: name ... -->``."""
    match = re.search(r"<!-- example: " + re.escape(name) + r"\b[^>]*-->\s*```bash\n(.*?)```", README.read_text(),
                      re.S)
    assert match, f"README.md has no example block {name!r}"
    return match.group(1)


def complete(text: str) -> bool:
    """True when ``text`` is a whole shell command: quotes closed, no trailing backslash."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def parse_answer(comment: str) -> Any:
    """A README answer: JSON where ``, …}`` marks more fields (kept as a "…" key)."""
    return json.loads(comment.replace(", …}", ', "…": true}'))


def steps(block: str) -> Iterator[Step]:
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        command = line
        while not complete(command):
            i += 1
            command += "\n" + lines[i]
        i += 1
        expected = None
        if i < len(lines) and lines[i].startswith("# {"):
            text = lines[i][1:].strip()
            while True:  # an answer may wrap over several comment lines
                try:
                    expected = parse_answer(text)
                    break
                except json.JSONDecodeError:
                    i += 1
                    assert i < len(lines) and lines[i].startswith("#"), f"unterminated answer: {text}"
                    text += " " + lines[i][1:].strip()
            i += 1
        yield Step(command, expected)


def matches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Differences between a README answer and the real one (empty when it matches)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        partial = expected.get("…") is True
        keys = set(expected) - {"…"}
        problems = [f"{path}.{k}: missing" for k in sorted(keys - set(actual))]
        if not partial:
            problems += [f"{path}.{k}: not in the README" for k in sorted(set(actual) - keys)]
        for key in sorted(keys & set(actual)):
            if key in VOLATILE:
                if not isinstance(actual[key], (int, float)):
                    problems.append(f"{path}.{key}: expected a number, got {actual[key]!r}")
                continue
            problems += matches(expected[key], actual[key], f"{path}.{key}")
        return problems
    if isinstance(expected, str) and "…" in expected:
        prefix = expected.split("…")[0]
        ok = isinstance(actual, str) and actual.startswith(prefix)
        return [] if ok else [f"{path}: expected {expected!r}, got {actual!r}"]
    if isinstance(expected, float) and not isinstance(actual, bool) and isinstance(actual, (int, float)):
        digits = len(repr(expected).partition(".")[2])
        ok = abs(actual - expected) <= 0.5 * 10**-digits + 1e-12
        return [] if ok else [f"{path}: expected {expected!r}, got {actual!r}"]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def localise(command: str, port: int, data_port: int | None = None) -> str:
    """Point the command at the test's service and interpreter; report each curl's status."""
    command = command.replace("localhost:8000", f"127.0.0.1:{port}")
    if data_port is not None:
        command = command.replace("localhost:8001", f"127.0.0.1:{data_port}")
    command = command.replace(".venv/bin/python", shlex.quote(sys.executable))
    command = command.replace(".venv/bin/model-router", f"{shlex.quote(sys.executable)} -m actors.client.cli")
    return re.sub(r"\bcurl -s\b", f"curl -sS -w '\\n{STATUS}%{{http_code}}\\n'", command) if (
        command.startswith("curl")) else command


def test_parser_reads_commands_answers_and_partial_objects() -> None:
    block = ("make run &\n# a comment\ncurl -s x -d '{\"a\":\n  1}'\n# {\"a\": 1, \"b\": \"sw-…\", …}\n"
             "K=\"$(cat k)\"\nOP=$(curl -s y \\\n  | python3 -c 'print(1)')\n")
    found = list(steps(block))
    assert [s.command for s in found] == ["make run &", "curl -s x -d '{\"a\":\n  1}'", 'K="$(cat k)"',
                                          "OP=$(curl -s y \\\n  | python3 -c 'print(1)')"]
    assert found[1].expected == {"a": 1, "b": "sw-…", "…": True}
    assert matches(found[1].expected, {"a": 1, "b": "sw-12", "c": 3}) == []
    assert matches({"a": 0.904}, {"a": 0.90414}) == [] and matches({"a": 0.904}, {"a": 0.9046}) != []
    assert matches({"a": 1}, {"a": 1, "c": 3}) == [".c: not in the README"]


def test_upload_limit_fits_the_body_limit() -> None:
    """The README's upload limit is the real one: a model of MAX_UPLOAD_BYTES, base64, fits a body."""
    assert (MAX_UPLOAD_BYTES + 2) // 3 * 4 <= MAX_BODY_BYTES


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("readme-demo") / "models"
    build_demo_repository(out)
    return out


def run_step(step: Step, port: int, cwd: Path, env: dict[str, str], shell_state: Path,
             data_port: int | None = None) -> tuple[int, str]:
    """Run one command in bash, carrying shell variables from step to step through a file."""
    command = localise(step.command, port, data_port)
    script = f"set -o pipefail\nsource {shlex.quote(str(shell_state))}\n{command}\n" \
             f"code=$?\ndeclare -p K OP 2>/dev/null > {shlex.quote(str(shell_state))}\nexit $code\n"
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


async def test_readme_quick_start_and_switching_run_as_written(tmp_path: Path, demo_models: Path) -> None:
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("backups"))
    shutil.copytree(demo_models, tmp_path / "models")
    (tmp_path / ".admin_key").write_text("readme-test-key\n")
    shell_state = tmp_path / ".shell_state"
    shell_state.write_text("")
    port = free_port()
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY_FILE": ".admin_key", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(  # what `make run` runs
        [sys.executable, str(ROOT / "app.py"), "--config", "conf/model_router_rules.yml", "--host", "127.0.0.1",
         "--port", str(port)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log = LogReader(process)
    ran: list[str] = []
    try:
        await log.wait_for(f"on http://127.0.0.1:{port}")
        for name in ("quick-start", "switching"):
            for step in steps(example_block(name)):
                if step.command == "make run &":
                    continue
                code, output = await trio.to_thread.run_sync(run_step, step, port, tmp_path, env, shell_state)
                ran.append(step.command)
                assert code == 0, f"{step.command!r} failed ({code}):\n{output}"
                check_answer(step, output)
        process.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(ran) == 10, ran  # every command of both blocks ran


def check_answer(step: Step, output: str) -> None:
    """Every curl answered 2xx, and the answer matches the one the README shows."""
    statuses = re.findall(re.escape(STATUS) + r"(\d+)", output)
    assert all(s.startswith("2") for s in statuses), f"{step.command!r} answered {statuses}:\n{output}"
    if step.expected is not None:
        answer = json.loads(output.split(STATUS)[0])
        assert matches(step.expected, answer) == [], f"{step.command!r}: {matches(step.expected, answer)}"


async def test_readme_five_minute_quick_start_runs_as_written(tmp_path: Path, demo_models: Path) -> None:
    """Both ports, a routed prediction, the switch feed, version 2 gradually, then a rollback."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("backups"))
    shutil.copytree(demo_models, tmp_path / "models")
    (tmp_path / ".admin_key").write_text("readme-test-key\n")
    shell_state = tmp_path / ".shell_state"
    shell_state.write_text("")
    port, data_port = free_port(), free_port()
    env = {**os.environ, "MODEL_ROUTER_ADMIN_KEY_FILE": ".admin_key", "PYTHONPATH": str(ROOT),
           "REMOTE_INFERENCE_URL": f"http://127.0.0.1:{port}"}
    process = subprocess.Popen(  # what `make run` runs
        [sys.executable, str(ROOT / "app.py"), "--config", "conf/model_router_rules.yml", "--host", "127.0.0.1",
         "--port", str(port), "--data-port", str(data_port)],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log = LogReader(process)
    followers: list[tuple[subprocess.Popen[str], Path]] = []
    ran: list[str] = []
    try:
        await log.wait_for(f"data plane on http://127.0.0.1:{data_port}")
        for step in steps(example_block("five-minute")):
            if step.command.startswith("make run"):
                continue
            ran.append(step.command)
            if step.command.rstrip().endswith("&"):
                out = tmp_path / f"follower-{len(followers)}.out"
                command = localise(step.command.rstrip().removesuffix("&"), port, data_port)
                with out.open("w") as sink:
                    follower = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env,
                                                stdout=sink, stderr=subprocess.PIPE, text=True)
                followers.append((follower, out))
                await LogReader(follower).wait_for("following switch events", timeout=15)
                continue
            code, output = await trio.to_thread.run_sync(run_step, step, port, tmp_path, env, shell_state,
                                                         data_port)
            assert code == 0, f"{step.command!r} failed ({code}):\n{output}"
            check_answer(step, output)
        assert len(followers) == 1
        follower, out = followers[0]
        assert await trio.to_thread.run_sync(follower.wait, 15) == 0
        lines = [line for line in out.read_text().splitlines() if line.strip()]
        assert len(lines) == 2 and all("ETH/USDT" in line for line in lines), lines
        assert "tlob_tiny@1" in lines[0] and "tlob_tiny@2" in lines[0], lines
        process.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(process.wait, 15) == 0
    finally:
        for follower, _ in followers:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(ran) == 10, ran  # every command of the block ran
