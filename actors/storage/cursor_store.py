"""The replica's place in the command stream on disk, so a restart resumes where it stopped.

Blocking calls (run them in a worker thread). The write is atomic (temp + rename, the
registry store's writer); a corrupt file is set aside and the replica replays the stream
from its start, which the command ids make harmless.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from actors.core.command_log import Cursor
from actors.storage.registry_store import save as save_atomically

log = logging.getLogger("model_router.cursor")


def load(path: Path) -> Cursor:
    try:
        return Cursor.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return Cursor()
    except (ValueError, TypeError, AttributeError) as exc:
        aside = path.with_suffix(path.suffix + ".corrupt")
        os.replace(path, aside)
        log.error("stream cursor %s unreadable (%s); moved to %s, replaying from the start", path, exc, aside)
        return Cursor()


def save(path: Path, cursor: Cursor) -> None:
    save_atomically(path, json.dumps(cursor.to_dict(), separators=(",", ":")))
