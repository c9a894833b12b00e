"""The keys command: token once on stdout, hashed entry written atomically (0600), comments kept."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actors.core.access import Role, authenticate, parse_access
from actors.storage.access_file import keys_main, read_policy

COMMENTED = textwrap.dedent("""\
    # Access for the trading desks.
    workspaces:
      desk-a:            # the first desk
        models: ["tlob_*"]
        daily_predictions: 1000
    keys:
      # engines
      - id: old-engine
        sha256: "0000000000000000000000000000000000000000000000000000000000000000"
        roles: [predict]   # inline comment
        workspace: desk-a
      - id: auditor
        sha256: "1111111111111111111111111111111111111111111111111111111111111111"
        roles:
          - read
    # after the keys
    """)


def create(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str, str]:
    code = keys_main(["create", "--file", str(path), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_create_prints_only_the_token_and_writes_its_hash(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "conf" / "access.yml"
    code, out, _ = create(capsys, path, "--id", "desk-a-engine", "--role", "predict", "--workspace", "desk-a")
    assert code == 0
    token = out.removesuffix("\n")
    assert out == token + "\n" and "\n" not in token and len(token) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    policy = read_policy(path)
    key = authenticate(policy, token)
    assert not isinstance(key, type(None))
    assert key.id == "desk-a-engine" and key.roles == frozenset({Role.PREDICT})  # type: ignore[union-attr]
    assert policy.keys[hashlib.sha256(token.encode()).hexdigest()].workspace_name == "desk-a"
    assert token not in path.read_text()
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == ["access.yml"]


def test_create_on_an_empty_file_starts_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty file is not a policy (the service refuses it), so the first key starts one."""
    path = tmp_path / "access.yml"
    path.write_text("\n")
    code, out, err = create(capsys, path, "--id", "first", "--role", "read")
    assert code == 0, err
    policy = read_policy(path)
    assert authenticate(policy, out.strip()).id == "first"  # type: ignore[union-attr]


def test_tokens_are_fresh_each_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    _, one, _ = create(capsys, path, "--id", "a", "--role", "read")
    _, two, _ = create(capsys, path, "--id", "b", "--role", "read")
    assert one != two
    assert {k.id for k in read_policy(path).keys.values()} == {"a", "b"}


def test_create_keeps_comments_and_other_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    path.write_text(COMMENTED)
    os.chmod(path, 0o644)
    code, out, err = create(capsys, path, "--id", "ops", "--role", "operate", "--role", "read")
    assert code == 0 and err == ""
    text = path.read_text()
    assert text.startswith(COMMENTED.split("# after the keys")[0])  # everything before is untouched
    for comment in ("# Access for the trading desks.", "# the first desk", "# engines", "# inline comment",
                    "# after the keys"):
        assert comment in text
    assert text.index('- id: "ops"') < text.index("# after the keys")
    policy = read_policy(path)
    assert {k.id for k in policy.keys.values()} == {"old-engine", "auditor", "ops"}
    new = authenticate(policy, out.strip())
    assert new.roles == frozenset({Role.OPERATE, Role.READ})  # type: ignore[union-attr]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("original", [
    "# only workspaces so far\nworkspaces:\n  w: {}  # desk w\n",
    "# keys to come\nworkspaces:\n  w: {}\nkeys:   # none yet\n",
])
def test_create_adds_a_keys_list_where_there_is_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     original: str) -> None:
    path = tmp_path / "access.yml"
    path.write_text(original)
    code, out, err = create(capsys, path, "--id", "e", "--role", "predict", "--workspace", "w")
    assert (code, err) == (0, "")
    text = path.read_text()
    assert all(line in text.splitlines() for line in original.splitlines())
    assert authenticate(read_policy(path), out.strip()).id == "e"  # type: ignore[union-attr]


def test_flow_style_keys_are_rewritten_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    path.write_text("# gone after the rewrite\nkeys: []\n")
    code, out, err = create(capsys, path, "--id", "boss", "--role", "admin")
    assert code == 0 and "comments were not kept" in err
    assert len(out.strip().splitlines()) == 1
    assert authenticate(read_policy(path), out.strip()).id == "boss"  # type: ignore[union-attr]


def test_create_refuses_what_would_be_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    path.write_text(COMMENTED)
    before = path.read_text()
    cases = [
        (["--id", "x", "--role", "predict"], "required for a key with the predict role"),
        (["--id", "x", "--role", "predict", "--workspace", "nowhere"], "unknown workspace 'nowhere'"),
        (["--id", "auditor", "--role", "read"], "already exists"),
        (["--id", "bad id", "--role", "read"], "keys[2].id"),
        (["--id", "x", "--role", "root"], "invalid choice"),
    ]
    for args, message in cases:
        code, out, err = create(capsys, path, *args)
        assert (code, out) == (2, ""), args
        assert message in err, (args, err)
    assert path.read_text() == before


def test_an_invalid_file_is_not_edited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    path.write_text("keys:\n  - id: x\n    sha256: nope\n    roles: [read]\n")
    code, out, err = create(capsys, path, "--id", "y", "--role", "read")
    assert (code, out) == (2, "") and "keys[0].sha256: must be 64 hex chars" in err


def test_list_shows_ids_roles_workspaces_never_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    path.write_text(COMMENTED)
    assert keys_main(["list", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["auditor\tread\t-", "old-engine\tpredict\tdesk-a"]
    assert keys_main(["list", "--file", str(tmp_path / "missing.yml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_revoke_removes_only_that_key_and_keeps_comments(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "access.yml"
    path.write_text(COMMENTED)
    _, token, _ = create(capsys, path, "--id", "ops", "--role", "operate")
    assert keys_main(["revoke", "--file", str(path), "--id", "old-engine"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    text = path.read_text()
    assert "old-engine" not in text and "0000000000" not in text
    assert "# engines" in text and "# after the keys" in text
    policy = read_policy(path)
    assert {k.id for k in policy.keys.values()} == {"auditor", "ops"}
    assert authenticate(policy, token.strip()).id == "ops"  # type: ignore[union-attr]
    assert keys_main(["revoke", "--file", str(path), "--id", "old-engine"]) == 2
    assert "no key with id 'old-engine'" in capsys.readouterr().err
    for key_id in ("auditor", "ops"):
        assert keys_main(["revoke", "--file", str(path), "--id", key_id]) == 0
    assert dict(parse_access(path.read_text()).keys) == {}


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_main([]) == 2
    assert keys_main(["create", "--id", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage:" in captured.err


def test_runs_as_a_separate_process(tmp_path: Path) -> None:
    path = tmp_path / "access.yml"
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from actors.storage.access_file import keys_main; "
                               "sys.exit(keys_main(sys.argv[1:]))",
         "create", "--file", str(path), "--id", "engine", "--role", "predict", "--workspace", "w"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    assert read_policy(path).keys[hashlib.sha256(token.encode()).hexdigest()].id == "engine"
    assert "created workspace 'w'" in done.stderr
