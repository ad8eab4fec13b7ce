"""Which payloads a store trusts: the keys that sign them and the codecs allowed to decode them.

Each store carries a `PayloadTrust` (``SQLStore(url, secret_keys=..., allowed_codecs=...)``,
``MemoryStore(secret_keys=..., allowed_codecs=...)``). A setting not given to the store comes
from the environment, so stores opened from URLs are configured without code:

* ``DURABLE_SECRET_KEY``: one key, or several separated by commas. The first signs every
  payload written; every one of them verifies payloads read (key rotation: put the new key
  first, keep the old one until no run needs its payloads).
* ``DURABLE_ALLOWED_CODECS``: codec names separated by commas (``json``): payloads of any
  other codec are refused before they are decoded, and workflows of another codec cannot write.

Signing is HMAC-SHA256 over the payload's codec tag and body (`durable._codec` writes the
envelope). A key identifier (4 bytes of a hash of the key) is stored beside the signature, so
a reader picks the right key at once and can say which key is missing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MIN_KEY_BYTES", "PayloadTrust", "trust_of"]

MIN_KEY_BYTES = 16
_KEY_ENV = "DURABLE_SECRET_KEY"
_CODECS_ENV = "DURABLE_ALLOWED_CODECS"


@dataclass(frozen=True, slots=True)
class PayloadTrust:
    """The signing keys (the first signs, all verify) and the allowed codec names (``None``:
    every registered codec)."""

    keys: tuple[bytes, ...] = ()
    allowed_codecs: frozenset[str] | None = None
    key_ids: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_ids", tuple(key_id(k) for k in self.keys))

    def __repr__(self) -> str:
        ids = ", ".join(k.hex() for k in self.key_ids)
        return f"PayloadTrust(key ids [{ids}], allowed_codecs={self.allowed_codecs!r})"

    @classmethod
    def configure(
        cls,
        secret_keys: str | bytes | Iterable[str | bytes] | None = None,
        allowed_codecs: Iterable[str] | None = None,
        *,
        owner: str = "the store",
    ) -> PayloadTrust:
        """The trust for a store's arguments; each one not given is read from the environment.

        Args:
            secret_keys: one key or a list (text is UTF-8 encoded), at least 16 bytes each.
            allowed_codecs: codec names, for example ``["json"]``.
            owner: names the store in error messages.

        Raises:
            ValueError: a key is empty, too short or not text/bytes; a codec name is not text;
                the list of allowed codecs is empty.
        """
        if secret_keys is None:
            secret_keys = _split(os.environ.get(_KEY_ENV, ""))
            where = f"the environment variable {_KEY_ENV}"
        else:
            where = f"{owner}'s secret_keys"
        if allowed_codecs is None:
            names = _split(os.environ.get(_CODECS_ENV, ""))
            allowed_codecs = names or None
            codecs_where = f"the environment variable {_CODECS_ENV}"
        else:
            codecs_where = f"{owner}'s allowed_codecs"
        return cls(_keys(secret_keys, where), _codec_names(allowed_codecs, codecs_where))

    @property
    def signs(self) -> bool:
        """Whether payloads are signed (and unsigned ones refused)."""
        return bool(self.keys)

    def allows(self, codec_name: str) -> bool:
        """Whether payloads of this codec may be written and decoded."""
        return self.allowed_codecs is None or codec_name in self.allowed_codecs

    def sign(self, signed: bytes) -> tuple[bytes, bytes]:
        """``(key id, HMAC-SHA256)`` of ``signed`` with the first key."""
        return self.key_ids[0], hmac.new(self.keys[0], signed, hashlib.sha256).digest()

    def verify(self, kid: bytes, mac: bytes, signed: bytes) -> str | None:
        """``None`` when ``mac`` is the signature of ``signed`` by the key ``kid``; else why not."""
        for key, known in zip(self.keys, self.key_ids, strict=True):
            if hmac.compare_digest(known, kid):
                expected = hmac.new(key, signed, hashlib.sha256).digest()
                if hmac.compare_digest(expected, mac):
                    return None
                return "its signature does not verify: it was altered or forged"
        return (
            f"it is signed with a key this store does not hold (key id {kid.hex()}); add that "
            "key to the accepted keys (secret_keys or DURABLE_SECRET_KEY)"
        )


def key_id(key: bytes) -> bytes:
    """4 bytes that name a key without revealing it."""
    return hashlib.sha256(b"durable key id\x00" + key).digest()[:4]


def trust_of(store: object) -> PayloadTrust:
    """The store's `PayloadTrust`, or the environment's for a store that carries none (a store
    written outside this package)."""
    trust = getattr(store, "payload_trust", None)
    return trust if isinstance(trust, PayloadTrust) else PayloadTrust.configure()


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _keys(given: str | bytes | Iterable[str | bytes], where: str) -> tuple[bytes, ...]:
    items = [given] if isinstance(given, str | bytes) else list(given)
    keys = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode()
        if not isinstance(item, bytes):
            raise ValueError(f"{where}: key {i} must be text or bytes, not {type(item).__name__}")
        if len(item) < MIN_KEY_BYTES:
            raise ValueError(
                f"{where}: key {i} is {len(item)} bytes; a signing key needs at least "
                f'{MIN_KEY_BYTES} (make one with: python -c "import secrets; '
                'print(secrets.token_urlsafe(32))")'
            )
        keys.append(item)
    return tuple(keys)


def _codec_names(given: Iterable[str] | None, where: str) -> frozenset[str] | None:
    if given is None:
        return None
    if isinstance(given, str):
        given = [given]
    names = frozenset(given)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{where} must name at least one codec, like ['json'], not {given!r}")
    return names
