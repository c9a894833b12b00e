"""Where the rules document lives: the config file (default) or one Redis key shared by replicas.

Both sources read ``(text, version)`` and write with a compare-and-set on the version:

* file: the version is a digest of the file's text; a write checks it under an
  exclusive lock on a sibling lock file, then replaces the file atomically (the file
  watcher and the API reload apply it).
* redis: the document and an integer version live in one hash; a write is a Lua script
  that bumps the version only if it still equals the one the caller read, so two
  editors on two replicas can never overwrite each other silently.

Blocking calls: run them in a worker thread.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

import attrs
import redis

from actors.storage.atomic import atomic_write_bytes
from actors.storage.config_files import read_config_text

REDIS_KEY = "model_router:rules"

# KEYS[1] the hash; ARGV[1] the expected version ("" = any), ARGV[2] the text.
# Returns {1, new_version} on success, {0, current_version} when the expected one is stale.
_CAS = """
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if ARGV[1] ~= '' and ARGV[1] ~= current then return {0, current} end
local new = tonumber(current) + 1
redis.call('HSET', KEYS[1], 'version', new, 'text', ARGV[2])
return {1, tostring(new)}
"""

# Seeds the document (as version ARGV[2]) when the key holds none; returns the version in force.
_SEED = """
if redis.call('HEXISTS', KEYS[1], 'text') == 0 then
  redis.call('HSET', KEYS[1], 'version', ARGV[2], 'text', ARGV[1])
end
return redis.call('HGET', KEYS[1], 'version')
"""


class StaleWrite(Exception):
    """The expected version is not the current one; ``current`` says which is."""

    def __init__(self, current: str) -> None:
        super().__init__(f"the current version is {current}")
        self.current = current


def text_version(text: str) -> str:
    """The file source's version: a digest of the text (changes whenever the content does)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@attrs.frozen
class FileRules:
    """The rules in the config file."""

    path: Path
    kind: str = "file"

    def read(self) -> tuple[str, str]:
        text = read_config_text(self.path)
        return text, text_version(text)

    def write(self, text: str, expected: str | None) -> str:
        lock = self.path.with_name(f".{self.path.name}.lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = text_version(read_config_text(self.path))
            except FileNotFoundError:
                current = ""
            if expected is not None and expected != current:
                raise StaleWrite(current)
            atomic_write_bytes(self.path, text.encode("utf-8"))
        return text_version(text)


@attrs.frozen
class RedisRules:
    """The rules in one Redis hash, shared by every replica."""

    client: redis.Redis
    key: str = REDIS_KEY
    kind: str = "redis"

    @classmethod
    def connect(cls, url: str, key: str = REDIS_KEY) -> RedisRules:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2,
                                        decode_responses=True), key)

    def read(self) -> tuple[str, str]:
        text, version = self.client.hmget(self.key, ["text", "version"])
        if text is None:
            raise FileNotFoundError(f"no rules document in Redis under {self.key!r}")
        return str(text), str(version or "0")

    def version(self) -> str | None:
        value = self.client.hget(self.key, "version")
        return None if value is None else str(value)

    def write(self, text: str, expected: str | None) -> str:
        ok, version = self.client.eval(_CAS, 1, self.key, expected or "", text)
        if not int(ok):
            raise StaleWrite(str(version))
        return str(version)

    def seed(self, text: str, version: int = 1) -> str:
        """Store ``text`` as ``version`` unless a document is there already; the version in force."""
        return str(self.client.eval(_SEED, 1, self.key, text, version))

    def close(self) -> None:
        self.client.close()


RulesSource = FileRules | RedisRules
