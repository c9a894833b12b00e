"""The access file on disk, and the ``keys`` command that edits it.

``keys create`` generates a token, stores only its sha256, and prints the token once on
stdout (nothing else goes to stdout, so ``TOKEN=$(... keys create ...)`` works). Edits are
textual where the file allows it, so the operator's comments and layout stay: a new key is
appended to a block-style ``keys:`` list, a revoked key's lines are cut out. A file whose
keys are written otherwise (a flow list ``keys: [...]``) is re-dumped from its data, with a
warning on stderr that comments were not kept. Every edit is validated as a whole file
before it replaces the old one atomically with mode 0600 (it holds key hashes), under an
advisory lock so two concurrent edits cannot lose one another.

Errors go to stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import yaml

from actors.core.access import ROLE_NAMES, AccessConfigError, AccessPolicy, parse_access
from actors.core.rules import AccessSettings
from actors.storage.atomic import atomic_write_bytes

FILE_MODE: Final = 0o600
REDUMP_WARNING: Final = ("warning: the keys list is not a block list; the file was rewritten from its data "
                          "and its comments were not kept")
NEW_FILE_HEADER: Final = "# model-router access file: workspaces and API keys (see docs/access.md).\n"


class KeysError(Exception):
    """A problem the operator must fix; printed on stderr, exit code 2."""


def read_policy(path: Path) -> AccessPolicy:
    """Load and validate the access file (blocking): what the service's loader calls."""
    return parse_access(path.read_text(encoding="utf-8"))


def read_configured_policy(config_path: Path, settings: AccessSettings) -> AccessPolicy | None:
    """The policy the rules file's ``access.file`` names (relative to its folder); None without one.

    Raises ``AccessConfigError`` (invalid) or ``OSError`` (unreadable): the caller keeps the old policy.
    """
    path, _ = settings.resolve(config_path)
    return None if path is None else read_policy(path)


# --------------------------------------------------------------------------- textual edits


def _content_end_line(node: yaml.Node) -> int:
    """The last line holding this node's own text (block collections end where the next token starts)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        end = node.end_mark
        return end.line if end.column > 0 or end.line == node.start_mark.line else end.line - 1
    lines = [node.start_mark.line]
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            lines += [_content_end_line(key_node), _content_end_line(value_node)]
    elif isinstance(node, yaml.SequenceNode):
        lines += [_content_end_line(item) for item in node.value]
    return max(lines)


def _keys_node(text: str) -> tuple[yaml.Node | None, yaml.Node | None, yaml.Node | None]:
    """(root, the ``keys`` key node, its value node) of the composed document."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return root, None, None
    for key_node, value_node in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "keys":
            return root, key_node, value_node
    return root, None, None


def _entry_lines(entry: dict[str, Any], pad: str) -> list[str]:
    """One key as block YAML; values JSON-quoted (valid YAML double-quoted strings)."""
    lines = [f"{pad}- id: {json.dumps(entry['id'])}", f"{pad}  sha256: {json.dumps(entry['sha256'])}",
             f"{pad}  roles: [{', '.join(json.dumps(r) for r in entry['roles'])}]"]
    if entry.get("workspace") is not None:
        lines.append(f"{pad}  workspace: {json.dumps(entry['workspace'])}")
    return [line + "\n" for line in lines]


def _append_textually(text: str, entry: dict[str, Any]) -> str | None:
    """``text`` with ``entry`` appended to its block ``keys`` list, or None when that is not possible."""
    root, key_node, value = _keys_node(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if root is None:
        return "".join(lines) + "keys:\n" + "".join(_entry_lines(entry, "  "))
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        return None
    if key_node is None:
        return "".join(lines) + "keys:\n" + "".join(_entry_lines(entry, "  "))
    assert value is not None
    if isinstance(value, yaml.ScalarNode):
        # "keys:" with nothing after it (null): the list starts on the next line.
        if value.value or value.start_mark.line != key_node.start_mark.line or value.style is not None:
            return None
        at = key_node.start_mark.line + 1
        return "".join(lines[:at] + _entry_lines(entry, "  ") + lines[at:])
    if not isinstance(value, yaml.SequenceNode) or value.flow_style or not value.value:
        return None
    first_line = lines[value.value[0].start_mark.line]
    stripped = first_line.lstrip(" ")
    if not stripped.startswith("-"):
        return None
    pad = first_line[: len(first_line) - len(stripped)]
    at = _content_end_line(value.value[-1]) + 1
    return "".join(lines[:at] + _entry_lines(entry, pad) + lines[at:])


def _remove_textually(text: str, key_id: str) -> str | None:
    """``text`` without the block-list item whose id is ``key_id``, or None when that is not possible."""
    _, _, value = _keys_node(text)
    if not isinstance(value, yaml.SequenceNode) or value.flow_style:
        return None
    lines = text.splitlines(keepends=True)
    for item in value.value:
        if not isinstance(item, yaml.MappingNode):
            continue
        ids = [v.value for k, v in item.value if isinstance(k, yaml.ScalarNode) and k.value == "id"
               and isinstance(v, yaml.ScalarNode)]
        if ids != [key_id]:
            continue
        start = item.start_mark.line
        if not lines[start].lstrip(" ").startswith("-"):
            return None
        end = _content_end_line(item)
        return "".join(lines[:start] + lines[end + 1:])
    return None


def _redump(data: dict[str, Any]) -> str:
    return NEW_FILE_HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _key_ids(policy: AccessPolicy) -> list[str]:
    return sorted(k.id for k in policy.keys.values())


def add_key(text: str | None, key_id: str, roles: list[str], workspace: str | None, token: str,
            warn: IO[str]) -> str:
    """The access file's new text with a key for ``token`` added (validated); raises KeysError."""
    entry = {"id": key_id, "sha256": hashlib.sha256(token.encode()).hexdigest(), "roles": roles,
             "workspace": workspace}
    if text is None or not text.strip():  # no file yet, or an empty one: start it
        body = NEW_FILE_HEADER
        if workspace is not None:
            body += f"workspaces:\n  {json.dumps(workspace)}: {{}}   # every model, no limits: edit to restrict\n"
            print(f"note: created workspace {workspace!r} with every model and no limits", file=warn)
        text = body
        before: list[str] = []
    else:
        before = _key_ids(_validated(text, "the existing file is invalid; fix it first"))
        if key_id in before:
            raise KeysError(f"a key with id {key_id!r} already exists (revoke it first)")
    data = yaml.safe_load(text) or {}
    if data.get("keys") is None:
        data["keys"] = []
    data["keys"].append({k: v for k, v in entry.items() if v is not None})
    redumped = _redump(data)
    _validated(redumped, "the new key would make the file invalid")
    new_text = _append_textually(text, entry)
    if new_text is None or not _has_ids(new_text, sorted([*before, key_id])):
        print(REDUMP_WARNING, file=warn)
        return redumped
    return new_text


def _has_ids(new_text: str, expected: list[str]) -> bool:
    """Whether a textual edit parses and holds exactly the expected keys (else: re-dump)."""
    try:
        return _key_ids(parse_access(new_text)) == expected
    except (AccessConfigError, yaml.YAMLError):
        return False


def remove_key(text: str, key_id: str, warn: IO[str]) -> str:
    """The access file's text without key ``key_id`` (validated); raises KeysError."""
    before = _key_ids(_validated(text, "the existing file is invalid; fix it first"))
    if key_id not in before:
        raise KeysError(f"no key with id {key_id!r} (known: {', '.join(before) or 'none'})")
    expected = sorted(k for k in before if k != key_id)
    data = yaml.safe_load(text)
    data["keys"] = [k for k in data["keys"] if not (isinstance(k, dict) and k.get("id") == key_id)]
    redumped = _redump(data)
    _validated(redumped, "revoking would make the file invalid")
    new_text = _remove_textually(text, key_id)
    if new_text is None or not _has_ids(new_text, expected):
        print(REDUMP_WARNING, file=warn)
        return redumped
    return new_text


def _validated(text: str, context: str) -> AccessPolicy:
    try:
        return parse_access(text)
    except AccessConfigError as exc:
        raise KeysError(f"{context}: {exc}") from exc


# --------------------------------------------------------------------------- the command


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize edits of one access file (advisory lock on a sidecar, since edits replace the inode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysError(f"cannot read {path}: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keys", description="Manage model-router API keys in an access file.")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="add a key; prints its token once on stdout")
    create.add_argument("--file", required=True, type=Path)
    create.add_argument("--id", required=True, dest="key_id")
    create.add_argument("--role", required=True, action="append", choices=ROLE_NAMES, dest="roles")
    create.add_argument("--workspace")
    listing = sub.add_parser("list", help="ids, roles and workspaces (never tokens)")
    listing.add_argument("--file", required=True, type=Path)
    revoke = sub.add_parser("revoke", help="remove a key")
    revoke.add_argument("--file", required=True, type=Path)
    revoke.add_argument("--id", required=True, dest="key_id")
    return parser


def keys_main(argv: list[str], stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``keys create|list|revoke ...``; 0 on success, 2 on any error (message on stderr)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        with contextlib.redirect_stderr(err):
            args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code in (0, None) else 2
    try:
        if args.command == "list":
            text = _read_text(args.file)
            if text is None:
                raise KeysError(f"{args.file} does not exist")
            policy = _validated(text, f"{args.file} is invalid")
            for key in sorted(policy.keys.values(), key=lambda k: k.id):
                roles = ",".join(sorted(r.value for r in key.roles))
                print(f"{key.id}\t{roles}\t{key.workspace_name or '-'}", file=out)
            return 0
        with _locked(args.file):
            text = _read_text(args.file)
            if args.command == "create":
                roles = list(dict.fromkeys(args.roles))
                token = secrets.token_urlsafe(32)
                new_text = add_key(text, args.key_id, roles, args.workspace, token, err)
                atomic_write_bytes(args.file, new_text.encode("utf-8"), mode=FILE_MODE)
                print(token, file=out)
                out.flush()
                return 0
            if text is None:
                raise KeysError(f"{args.file} does not exist")
            atomic_write_bytes(args.file, remove_key(text, args.key_id, err).encode("utf-8"), mode=FILE_MODE)
            print(f"revoked key {args.key_id!r} in {args.file}", file=err)
            return 0
    except KeysError as exc:
        print(f"keys: error: {exc}", file=err)
        return 2
    except OSError as exc:
        print(f"keys: error: {exc}", file=err)
        return 2


def main() -> None:
    """Console-script entry point (``model-router keys ...`` passes ``sys.argv[2:]`` to ``keys_main``)."""
    raise SystemExit(keys_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
