"""``model-router`` end to end: the real parser and commands, against files and a running service.

Commands that call the service run ``main`` in a worker thread (it blocks, as in a
shell) while the service runs in process on the trio loop; ``tail-switches`` is also run
as its own process and stopped with SIGINT, as an operator stops it with Ctrl-C.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.build.demo_models import build_random_model
from actors.client.cli import main
from tests.conftest import ADMIN_KEY, FAST_FEATURES, Harness, fast_features, render_config, running_app

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["serve"], ["validate"], ["route"], ["models"], ["models", "build"], ["models", "list"], ["switch"],
            ["rollback"], ["status"], ["tail-switches"]]


class Captured(io.StringIO):
    """A stream a test can wait on: ``seen`` is set once ``marker`` has been written."""

    def __init__(self, marker: str = "\n") -> None:
        super().__init__()
        self.marker = marker
        self.seen = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.marker in self.getvalue():
            self.seen.set()
        return written


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = Captured(), Captured()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def run_in_thread(argv: list[str]) -> tuple[int, str, str]:
    return await trio.to_thread.run_sync(run, argv)


def service_args(h: Harness) -> list[str]:
    return ["--url", h.url, "--admin-key", ADMIN_KEY]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: model-router")
    if command != ["serve"]:
        assert f"model-router {' '.join(command)}" in text and "--json" in text
    else:
        assert "--config" in text and "--workers" in text  # the service's own options


# ------------------------------------------------------------------ validate / route ----


def test_validate_ok_invalid_and_warnings(config_path: Path, repo: Path, tmp_path: Path) -> None:
    code, out, _ = run(["validate", str(config_path)])
    assert code == 0 and out.startswith(f"OK {config_path}: 2 rule(s)") and "default model backup" in out

    shadowed = render_config(repo, rules='- match: {asset_class: "*"}\n  model: fast\n  priority: 1\n'
                                          '- match: {asset_class: crypto}\n  model: windowed\n')
    (config_path.parent / "shadowed.yml").write_text(shadowed)
    code, out, _ = run(["validate", str(config_path.parent / "shadowed.yml")])
    assert code == 0 and "warning rules[1] can never match" in out

    broken = tmp_path / "broken.yml"
    broken.write_text(render_config(repo, rules='- match: {horizon_ms: ">5 & <3"}\n  model: ghost\n'))
    code, out, _ = run(["validate", str(broken)])
    assert code == 1 and out.startswith(f"INVALID {broken}: 2 problem(s)")
    assert "rules[0].match.horizon_ms" in out and "ghost" in out

    code, out, _ = run(["--json", "validate", str(broken)])
    report = json.loads(out)
    assert code == 1 and report["valid"] is False and len(report["errors"]) == 2


def test_validate_against_lists_the_routes_whose_model_changes(config_path: Path, repo: Path) -> None:
    new = config_path.parent / "new.yml"
    new.write_text(render_config(repo, rules="""\
- match: {asset_class: "crypto", horizon_ms: "<30000"}
  model: fast
  priority: 10
- match: {asset_class: "crypto", horizon_ms: ">=30000"}
  model: windowed
  priority: 20
"""))
    code, out, _ = run(["validate", str(new), "--against", str(config_path)])
    lines = out.splitlines()
    assert code == 0 and f"2 route(s) change model against {config_path}:" in lines
    assert "  crypto [30000,30000]: fast (rule 0) -> windowed (rule 1)" in lines
    assert "  crypto (30000,60000): fast (rule 0) -> windowed (rule 1)" in lines

    code, out, _ = run(["validate", str(config_path), "--against", str(config_path), "--json"])
    assert code == 0 and json.loads(out)["changes"] == []


def test_route_with_a_local_config(config_path: Path) -> None:
    code, out, _ = run(["route", "crypto", "120000", "--config", str(config_path)])
    assert code == 0 and out.startswith("windowed  via rules[1] 'crypto long'") and "bucket (60000,+inf)" in out
    code, out, _ = run(["route", "equity", "5", "BTCUSD", "--config", str(config_path), "--json"])
    answer = json.loads(out)
    assert code == 0 and (answer["model"], answer["rule_index"], answer["source"]) == ("backup", None, "config")


# ------------------------------------------------------------------ against the service ----


async def test_route_models_list_and_status_against_the_service(config_path: Path) -> None:
    async with running_app(config_path) as h:
        code, out, _ = await run_in_thread(["route", "crypto", "1000", "--url", h.url])
        assert code == 0 and out.startswith("fast  via rules[0] 'crypto short'") and "fallback backup" in out
        await h.service.cache.get("fast")
        code, out, _ = await run_in_thread(["models", "list", "--url", h.url])
        lines = {line.split()[0]: line for line in out.splitlines()}
        assert code == 0 and set(lines) == {"backup", "fast", "windowed"}
        assert "1:serving 100%" in lines["fast"] and "policy latest" in lines["fast"]
        code, out, _ = await run_in_thread(["--json", "models", "list", "--url", h.url])
        assert code == 0 and [m["name"] for m in json.loads(out)] == ["backup", "fast", "windowed"]
        code, out, _ = await run_in_thread(["status", "--url", h.url])
        assert code == 0 and ", ready" in out and "running switches: 0" in out
        code, _, err = await run_in_thread(["switch", "fast", "7", *service_args(h)])
        assert code == 1 and err.startswith("model-router: 404 version_not_found: model 'fast' has no version '7'")
        assert '"available": ["1"]' in err


async def test_switch_shows_progress_until_done_and_exit_code_says_how_it_ended(config_path: Path,
                                                                                repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path) as h:
        code, out, _ = await run_in_thread(["switch", "fast", "1", "--strategy", "gradual", "--steps", "50,100",
                                            "--interval-s", "0.2", "--poll-s", "0.05", *service_args(h)])
        lines = out.splitlines()
        assert code == 0, out
        assert lines[-1].endswith("completed step 2/2, 100% on 1") and "fast 2 -> 1" in lines[-1]
        assert len(lines) >= 2 and all(line.startswith("sw-") for line in lines)

        # a gradual switch rolled back while the command follows it: exit code 1
        async with trio.open_nursery() as nursery:
            result: dict[str, Any] = {}

            async def follow() -> None:
                result["run"] = await run_in_thread(["switch", "fast", "2", "--strategy", "gradual", "--steps",
                                                     "50,100", "--interval-s", "60", "--poll-s", "0.05",
                                                     *service_args(h)])

            nursery.start_soon(follow)
            with trio.fail_after(10):
                view = await h.service.transitions.wait_until(lambda v: any(
                    op.state == "running" and op.to_version == "2" for op in v.state.operations.values()))
            assert (await h.admin_post("/models/fast/rollback")).status_code == 202
        code, out, _ = result["run"]
        assert code == 1 and "rolled_back" in out.splitlines()[-1]
        assert len(view.state.operations) == 2

        code, out, _ = await run_in_thread(["--json", "rollback", "fast", "--version", "2", *service_args(h)])
        final = json.loads(out)
        assert code == 0 and final["state"] == "completed" and final["to_version"] == "2"


async def test_tail_switches_prints_each_event_then_stops(config_path: Path, repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path) as h:
        await h.predict(asset_class="crypto", horizon_ms=1000, symbol="T1", features=fast_features())
        out, err = Captured(), Captured("following switch events")

        def tail() -> int:
            return main(["tail-switches", "--model", "fast", "--count", "1", "--url", h.url], stdout=out, stderr=err)

        async with trio.open_nursery() as nursery:
            codes: list[int] = []

            async def run_tail() -> None:
                codes.append(await trio.to_thread.run_sync(tail))

            nursery.start_soon(run_tail)
            assert await trio.to_thread.run_sync(err.seen.wait, 10)  # subscribed
            assert (await h.admin_post("/models/fast/switch", json={"version": "1"})).status_code == 202
        (line,) = out.getvalue().splitlines()
        assert codes == [0] and " T1 fast@2 -> fast@1 switch_complete op sw-" in line


async def test_tail_switches_process_runs_until_ctrl_c(config_path: Path, repo: Path) -> None:
    build_random_model(repo, "fast", "2", FAST_FEATURES, seed=21)
    async with running_app(config_path) as h:
        await h.predict(asset_class="crypto", horizon_ms=1000, symbol="P1", features=fast_features())
        process = subprocess.Popen([sys.executable, "-m", "actors.client.cli", "--json", "tail-switches"], cwd=ROOT,
                                   env={**os.environ, "REMOTE_INFERENCE_URL": h.url}, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert process.stderr is not None and process.stdout is not None
            with trio.fail_after(20):
                hello = await trio.to_thread.run_sync(process.stderr.readline, abandon_on_cancel=True)
            assert hello.startswith("following switch events on " + h.url)
            assert (await h.admin_post("/models/fast/switch", json={"version": "1"})).status_code == 202
            with trio.fail_after(20):
                event = json.loads(await trio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True))
            assert (event["symbol"], event["old_model"], event["new_model"]) == ("P1", "fast@2", "fast@1")
            process.send_signal(signal.SIGINT)
            code = await trio.to_thread.run_sync(process.wait, 20)
            assert code == 0 and "stopped after 1 event(s)" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
