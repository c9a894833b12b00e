"""Hypothesis profiles and one live service (both ports) per fuzz module.

Profiles: ``short`` (the default; what ``make test`` runs, well under a minute) and
``long`` (``make fuzz``: thousands of examples per test). Pick one with
``HYPOTHESIS_PROFILE``. The service runs on the test's Trio loop (it installs signal handlers, so it
needs the main thread); the examples run in a worker thread as plain blocking socket
exchanges, one hypothesis test per route, and every failing route is reported at once.
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import attrs
import pytest
import trio
from hypothesis import HealthCheck, Phase, settings

from actors.web.service import Service
from tests.conftest import free_port, render_config, running_app, wait_ready
from tests.fuzz.client import request

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much, HealthCheck.large_base_example]
# The short pass skips shrinking (bounded time in `make test`); the long pass shrinks to a minimal example.
settings.register_profile("short", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "12")), deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate))
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")), deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))

# Short data-plane timeouts so a half-sent request is answered (408) or closed quickly.
FUZZ_CONFIG = "  data_plane:\n    header_timeout_s: 2\n    keep_alive_timeout_s: 2\n"


@attrs.frozen
class Live:
    """A running service: its two ports, its folder and repository, and the service object."""

    main_port: int
    data_port: int
    root: Path
    repo: Path
    service: Service = attrs.field(eq=False, repr=False)

    def healthy(self) -> None:
        """No crash: both ports still answer /health."""
        for port in (self.main_port, self.data_port):
            answer = request(port, "GET", "/health")
            assert answer.status == 200, (port, answer)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


@pytest.fixture
async def live(tmp_path: Path, built_repo: Path) -> AsyncIterator[Live]:
    """The whole service on free ports (main and data plane), ready to serve the default model."""
    repo = tmp_path / "models"
    shutil.copytree(built_repo, repo)
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "rules.yml"
    config.write_text(render_config(repo) + FUZZ_CONFIG)
    async with running_app(config, data_port=free_port()) as harness:
        await wait_ready(harness)
        assert harness.data_url is not None
        yield Live(_port(harness.url), _port(harness.data_url), tmp_path, repo, harness.service)


def fuzz_each(cases: Iterable[tuple[str, Callable[[], None]]]) -> list[str]:
    """Run each hypothesis test (in this worker thread); the falsifying examples of those that fail.

    Every case runs even after one fails, so one pass reports every broken route at once.
    """
    failures = []
    for name, case in cases:
        try:
            case()
        except Exception as exc:
            notes = "\n".join(getattr(exc, "__notes__", []))
            failures.append(f"--- {name}\n{''.join(traceback.format_exception_only(exc)).strip()[:2000]}\n{notes}")
    return failures


async def fuzz_in_thread(cases: Iterable[tuple[str, Callable[[], None]]]) -> None:
    """The examples run in a worker thread (plain blocking sockets) while the service runs on this loop."""
    failures = await trio.to_thread.run_sync(fuzz_each, list(cases))
    assert not failures, "\n\n".join(failures)
