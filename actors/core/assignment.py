"""Sticky, process-independent assignment of request keys to a candidate model version (pure).

Scheme
------
Every switch operation gets a *salt* (``new_salt(operation_id)`` = ``"op-" + operation_id``).
A request key (e.g. an account or instrument id) maps to a bucket in ``[0, 10000)``::

    bucket = int.from_bytes(sha1(f"{salt}:{key}".encode("utf-8")).digest()[:8], "big") % 10000

and the request goes to the candidate version when ``bucket < weight_bp``, where
``weight_bp`` is the candidate's share of traffic in basis points (10000 = 100 %).

Why this shape:

* **Sticky across processes and restarts.** SHA-1 of the salt and key is the same in every
  process on every machine; Python's ``hash()`` is randomised per process
  (``PYTHONHASHSEED``) and is never used. Replicas behind a load balancer therefore agree
  on which version serves a key, and a restarted router keeps the same split.
* **Monotonic ramps.** Because the test is ``bucket < weight_bp``, raising the weight only
  ever moves keys *to* the candidate; a key that already saw the candidate never flips
  back to the stable version while a gradual rollout or canary progresses.
* **Independent experiments.** The salt is per operation, so the keys in one operation's
  first 5 % are unrelated to the keys in the next operation's first 5 %; the same
  accounts are not always the guinea pigs.
* **Uniform.** The first 8 bytes of SHA-1 are uniform enough that the modulo bias over
  2**64 is negligible (about 10000 / 2**64).
"""

from __future__ import annotations

import hashlib

BASIS_POINTS = 10_000


def assignment_bucket(salt: str, key: str) -> int:
    """The key's bucket in ``[0, BASIS_POINTS)`` for this salt; identical in every process."""
    digest = hashlib.sha1(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BASIS_POINTS


def goes_to_candidate(salt: str, key: str, weight_bp: int) -> bool:
    """Whether the key is served by the candidate at ``weight_bp`` (monotonic in the weight)."""
    return assignment_bucket(salt, key) < weight_bp


def new_salt(operation_id: str) -> str:
    """The salt of an operation: derived from its id so a persisted operation keeps its split."""
    return f"op-{operation_id}"
