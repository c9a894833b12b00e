"""The break-glass admin key: from ``MODEL_ROUTER_ADMIN_KEY`` or the file ``MODEL_ROUTER_ADMIN_KEY_FILE`` names.

One reader for the service and its client, so both find the key the same way. The key is
never logged; an unreadable file is reported by its error only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("model_router")


def read_admin_key(environ: Mapping[str, str], *, quiet: bool = False) -> str | None:
    """The key, or None when neither variable gives one (``quiet``: no warning for an unreadable file)."""
    key = environ.get("MODEL_ROUTER_ADMIN_KEY", "").strip()
    if key:
        return key
    path = environ.get("MODEL_ROUTER_ADMIN_KEY_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            if not quiet:
                log.warning("cannot read MODEL_ROUTER_ADMIN_KEY_FILE: %s", exc.strerror)
    return None
