"""API keys: generated on first run, stored only as SHA-256 hashes: in Redis (shared by every gateway replica and
kept across restarts; the default) or in a 0600 state file (one gateway process).

SHA-256 without a salt or a slow KDF is enough here because the keys are 256-bit random tokens, not
passwords: there is nothing to brute-force or look up in a table. A presented key is hashed and compared
to every stored hash with hmac.compare_digest, so timing does not reveal how much of a hash matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "mgw_"
STATE_FILE = "api_keys.json"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    sha256: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner, without a window where it has wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class ApiKeyStore:
    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / STATE_FILE
        self._keys: list[ApiKey] = []

    @property
    def path(self) -> Path:
        return self._path

    def load_or_init(self, first_key_file: Path) -> bool:
        """Load the hashes; on first run create one key and write its plaintext once to first_key_file.

        Returns True when a key was generated. The plaintext is never logged.
        """
        if self._path.exists():
            data = json.loads(self._path.read_text(encoding="utf-8"))
            self._keys = [ApiKey(k["id"], k["sha256"]) for k in data["keys"]]
            os.chmod(self._path, 0o600)
            return False
        plaintext = self.add_key()
        _write_private(first_key_file, plaintext + "\n")
        log.info("generated the first API key", extra={"key_id": self._keys[-1].key_id,
                                                       "key_file": str(first_key_file)})
        return True

    def add_key(self) -> str:
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        self._keys.append(ApiKey(key_id="k_" + secrets.token_hex(4), sha256=hash_key(plaintext)))
        self._save()
        return plaintext

    def _save(self) -> None:
        body = {"version": 1, "updated": int(time.time()),
                "keys": [{"id": k.key_id, "sha256": k.sha256} for k in self._keys]}
        _write_private(self._path, json.dumps(body, indent=2) + "\n")

    def verify(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for key in self._keys:  # no early exit: every stored hash is compared
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


class RedisApiKeyStore:
    """The key hashes in one Redis hash, `<prefix>:gateway:api_keys` (key id -> SHA-256), read on every check.

    Every replica behind the Service sees the same keys, a key added by one is valid on all at once, and a restart
    loses nothing. Only hashes are stored; the plaintext exists once, in the first-key file.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._hash = f"{prefix}:gateway:api_keys"
        self._first = f"{prefix}:gateway:api_keys:first"

    @property
    def path(self) -> str:
        return f"redis {self._hash}"

    def load_or_init(self, first_key_file: Path) -> bool:
        """Register the key in first_key_file if it holds one (a mounted Secret, a restart); else, when the store is
        empty, generate one key and write its plaintext once to first_key_file. Returns True when one was generated.

        Replicas starting together elect one generator with SET NX, so one first key exists, not one per replica.
        """
        if first_key_file.is_file():
            plaintext = first_key_file.read_text(encoding="utf-8").strip()
            if plaintext:
                self._register(plaintext)
                return False
        if self._redis.hlen(self._hash) > 0 or not self._redis.set(self._first, "1", nx=True):
            return False
        plaintext = self.add_key()
        _write_private(first_key_file, plaintext + "\n")
        log.info("generated the first API key", extra={"key_id": self._id_of(plaintext),
                                                       "key_file": str(first_key_file)})
        return True

    @staticmethod
    def _id_of(plaintext: str) -> str:
        return "k_" + hash_key(plaintext)[:8]  # derived, so registering the same key twice keeps one entry

    def _register(self, plaintext: str) -> None:
        self._redis.hsetnx(self._hash, self._id_of(plaintext), hash_key(plaintext))

    def add_key(self) -> str:
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        self._register(plaintext)
        return plaintext

    def verify(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for key_id, stored in sorted(self._redis.hgetall(self._hash).items()):  # no early exit
            if hmac.compare_digest(digest.encode(), stored):
                found = ApiKey(key_id.decode(), stored.decode())
        return found
