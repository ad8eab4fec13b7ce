"""Payload codecs: how activity results, workflow arguments/results and errors become bytes.

Envelopes (every payload the store holds)::

    unsigned: b"\\xd1" | tag (1 byte) | crc32(tag + body) (4 bytes, big-endian) | body
    signed:   b"\\xd2" | tag (1 byte) | key id (4 bytes) | HMAC-SHA256(b"\\xd2" + tag + body) | body

The first byte is the magic/version byte; the tag names the codec that wrote the body (``b"p"``
cloudpickle, ``b"j"`` JSON). The CRC makes truncation and bit flips detectable instead of
decoding to a wrong value; the signature (written when the store has a secret key, see
`durable._trust`) makes a forged or altered payload detectable before anything decodes it.

Rules:

* `Payloads.dumps` never lets an encoder error escape: it raises `SerializationError`.
* `Payloads.loads` never returns a value for a payload it cannot trust: bad magic, unknown tag,
  checksum mismatch, a missing or wrong signature when the store signs, a codec the store or
  the workflow does not accept, or any decoder error (including a class that no longer exists)
  raise `PayloadDecodeError` naming the run and step, before the body is decoded.
* A workflow reads only payloads of its own codec; one on the pickle codec also reads the
  others (nothing is riskier to decode than a pickle). So a workflow declared with `JSONCodec`
  never unpickles anything.
* The JSON codec instantiates only classes named ``"module:qualname"`` that are dataclasses,
  Enums, pydantic models or exceptions, so a payload cannot call arbitrary callables.
  cloudpickle, like any pickle, can run code from a crafted payload: sign payloads, or use
  JSON, unless everyone who can write to the store is trusted.
* `Payloads.dumps_error` records an exception so that the first run and every replay see the
  same error, or an `ActivityError` stand-in when the exception does not survive a round trip.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import pickle
import sys
import traceback
import zlib
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

import cloudpickle

from durable._errors import (
    ActivityError,
    CodecNotAllowed,
    DurableError,
    PayloadDecodeError,
    SerializationError,
)
from durable._trust import PayloadTrust

__all__ = [
    "DEFAULT_CODEC",
    "MAGIC",
    "SIGNED",
    "Codec",
    "JSONCodec",
    "Payloads",
    "PickleCodec",
    "dumps",
    "dumps_error",
    "loads",
    "register_codec",
]

MAGIC = b"\xd1"
SIGNED = b"\xd2"
_HEADER = 6  # magic + tag + crc32
_SIGNED_HEADER = 38  # magic + tag + key id + HMAC-SHA256
_TAG = "__durable__"


class Codec(Protocol):
    """Turns values into bytes and back. ``tag`` is one byte, unique among registered codecs."""

    name: str
    tag: bytes

    def encode(self, value: object) -> bytes:
        """Encode ``value``; raise (``TypeError`` for unsupported values) on failure."""
        ...

    def decode(self, data: bytes) -> object:
        """Decode bytes written by `encode`."""
        ...


class PickleCodec:
    """The default codec: cloudpickle, so lambdas, local classes and most objects work."""

    name = "pickle"
    tag = b"p"

    def encode(self, value: object) -> bytes:
        """Pickle ``value`` at the highest protocol.

        The standard pickler runs first: it is several times faster than cloudpickle's, and it
        stores classes and functions by reference, so a class defined in a script's
        ``__main__`` decodes as that same class when the script runs again. Only what it cannot
        pickle by reference (lambdas, local classes and functions) goes to cloudpickle, which
        pickles it by value. Both decode with `pickle.loads`.
        """
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            cloudpickled: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            return cloudpickled

    def decode(self, data: bytes) -> object:
        """Unpickle ``data``. Only decode payloads from a store you trust."""
        return pickle.loads(data)


class JSONCodec:
    """Portable, type-tagged JSON. Plain JSON values stay plain; others become tagged objects
    like ``{"__durable__": "dataclass", "type": "module:qualname", "value": {...}}``.
    Exceptions keep their type, args and the attributes JSON can encode.
    """

    name = "json"
    tag = b"j"

    def encode(self, value: object) -> bytes:
        """Encode ``value``; raise ``TypeError`` naming where an unsupported value sits."""
        return json.dumps(_enc(value), separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> object:
        """Decode bytes written by `encode`, refusing classes it may not instantiate."""
        return _dec(json.loads(data.decode()))


_CODECS: dict[bytes, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Make payloads tagged ``codec.tag`` decodable by `loads` (and writable by `dumps`).

    Raises:
        ValueError: the tag is not one byte, or is taken by a different codec.
    """
    if not isinstance(codec.tag, bytes) or len(codec.tag) != 1:
        raise ValueError(f"codec {codec.name!r}: tag must be exactly one byte, not {codec.tag!r}")
    taken = _CODECS.get(codec.tag)
    if taken is not None and (type(taken), taken.name) != (type(codec), codec.name):
        raise ValueError(f"codec tag {codec.tag!r} is already taken by codec {taken.name!r}")
    _CODECS[codec.tag] = codec


DEFAULT_CODEC = PickleCodec()
register_codec(DEFAULT_CODEC)
register_codec(JSONCodec())


_UNSIGNED = PayloadTrust()


class Payloads:
    """One run's payloads, as its store requires them.

    Written with the workflow's codec, and signed when the store has a key. Read only when
    they are signed by a key the store holds (if it has any), of a codec the store allows, and
    of the workflow's own codec (a pickle workflow also reads the others); anything else is a
    `PayloadDecodeError` raised before the body is decoded.

    Args:
        codec: the workflow's codec, or ``None`` for a reader that does not know the workflow
            (it reads any codec the store allows, and cannot write).
        trust: the store's `PayloadTrust`.
    """

    __slots__ = ("codec", "trust")

    def __init__(self, codec: Codec | None, trust: PayloadTrust = _UNSIGNED) -> None:
        """See the class docstring."""
        self.codec = codec
        self.trust = trust

    def dumps(self, value: object, *, what: str) -> bytes:
        """Encode ``value``.

        Args:
            value: the value to record.
            what: what is encoded, for the error message ("result of activity 'shop.charge'").

        Raises:
            SerializationError: the codec cannot encode ``value``.
            CodecNotAllowed: the store does not allow the workflow's codec.
        """
        codec = self._writer(what)
        try:
            body = codec.encode(value)
        except Exception as e:
            raise SerializationError(what, _type_name(type(value)), _reason(e)) from e
        return self._envelope(codec, body)

    def dumps_error(self, exc: BaseException, *, what: str) -> tuple[bytes, BaseException]:
        """Encode an exception for recording, and return the exception the workflow must see.

        The exception is round-tripped. If that fails or changes its type, an `ActivityError`
        (type name, message, traceback text) is recorded and returned instead. Otherwise the
        original is returned for `PickleCodec` (it keeps its traceback) and the decoded copy
        for other codecs, which may drop attributes: the first run sees what every replay sees.

        Returns:
            ``(payload, exception to raise in the workflow)``.
        """
        codec = self._writer(what)
        # The recorded copy carries the original traceback as a note: when it is raised again
        # (a replay, the same id again, `handle.result()` in another process), it shows where
        # the error really came from, not only the SDK's frames.
        note = _origin_note(exc)
        if note is not None:
            exc.add_note(note)
        try:
            body = codec.encode(exc)
            decoded = codec.decode(body)
        except Exception:
            pass
        else:
            if type(decoded) is type(exc) and isinstance(decoded, BaseException):
                _drop_note(exc, note)
                seen = exc if isinstance(codec, PickleCodec) else decoded
                return self._envelope(codec, body), seen
        _drop_note(exc, note)
        try:
            message = str(exc)
        except Exception:
            message = "<str() failed>"
        tb = "".join(traceback.format_exception(exc))
        stand_in = ActivityError(_type_name(type(exc)), message, tb)
        return self.dumps(stand_in, what=what), stand_in

    def loads(self, data: bytes, *, run_id: str, seq: int | None, what: str) -> object:
        """Decode a payload written by `dumps`, if it may be trusted (see the class docstring).

        Args:
            data: the payload.
            run_id: the run owning it, for the error message.
            seq: its step number, or ``None`` for the run's own arguments / result.
            what: which payload ("result", "error", "arguments").

        Raises:
            PayloadDecodeError: the payload is corrupt, unsigned or wrongly signed where the
                store signs, of a codec that is not accepted, or does not decode.
        """
        data = bytes(data)

        def refuse(reason: str) -> PayloadDecodeError:
            return PayloadDecodeError(run_id, seq, what, reason)

        if len(data) < _HEADER:
            raise refuse(f"payload truncated to {len(data)} bytes")
        magic = data[:1]
        if magic == MAGIC:
            header = _HEADER
        elif magic == SIGNED:
            header = _SIGNED_HEADER
        else:
            raise refuse(
                f"not a durable payload (magic byte {magic!r}, not {MAGIC!r} or {SIGNED!r})"
            )
        if len(data) < header:
            raise refuse(f"payload truncated to {len(data)} bytes")
        tag, body = data[1:2], data[header:]
        codec = _CODECS.get(tag)
        if codec is None:
            raise refuse(f"unknown codec tag {tag!r}; register_codec() the codec that wrote it")
        trust = self.trust
        if magic == SIGNED:
            if not trust.signs:
                raise refuse(
                    "the payload is signed but this store has no secret key to verify it; "
                    "give the store its key (secret_keys= or DURABLE_SECRET_KEY)"
                )
            problem = trust.verify(data[2:6], data[6:header], magic + tag + body)
            if problem is not None:
                raise refuse(f"the payload is refused: {problem}")
        elif trust.signs:
            raise refuse(
                "the payload is not signed, and this store accepts only signed payloads: it "
                "was not written by durable with this store's key"
            )
        elif zlib.crc32(body, zlib.crc32(tag)) != int.from_bytes(data[2:_HEADER], "big"):
            raise refuse("checksum mismatch: the payload is corrupt")
        if not trust.allows(codec.name):
            raise refuse(
                f"it is a {codec.name} payload, and this store allows only "
                f"{_names(trust.allowed_codecs)} payloads (allowed_codecs)"
            )
        own = self.codec
        if own is not None and own.tag != tag and not isinstance(own, PickleCodec):
            raise refuse(
                f"it is a {codec.name} payload, and the workflow's codec is {own.name}: a "
                f"workflow reads only payloads of its own codec"
            )
        try:
            return codec.decode(body)
        except Exception as e:
            raise refuse(f"{codec.name} codec: {_reason(e)}") from e

    def _writer(self, what: str) -> Codec:
        codec = self.codec
        if codec is None:
            raise TypeError("Payloads(None, ...) reads payloads; it cannot write them")
        _check_registered(codec)
        if not self.trust.allows(codec.name):
            raise CodecNotAllowed(what, codec.name, _names(self.trust.allowed_codecs))
        return codec

    def _envelope(self, codec: Codec, body: bytes) -> bytes:
        if self.trust.signs:
            kid, mac = self.trust.sign(SIGNED + codec.tag + body)
            return b"".join((SIGNED, codec.tag, kid, mac, body))
        crc = zlib.crc32(body, zlib.crc32(codec.tag))
        return b"".join((MAGIC, codec.tag, crc.to_bytes(4, "big"), body))


def dumps(codec: Codec, value: object, *, what: str) -> bytes:
    """`Payloads.dumps` for a store that neither signs nor restricts codecs."""
    return Payloads(codec).dumps(value, what=what)


def loads(data: bytes, *, run_id: str, seq: int | None, what: str) -> object:
    """`Payloads.loads` for a store that neither signs nor restricts codecs, accepting the
    payload of any registered codec."""
    return Payloads(None).loads(data, run_id=run_id, seq=seq, what=what)


def dumps_error(codec: Codec, exc: BaseException, *, what: str) -> tuple[bytes, BaseException]:
    """`Payloads.dumps_error` for a store that neither signs nor restricts codecs."""
    return Payloads(codec).dumps_error(exc, what=what)


ORIGIN_NOTE = "Recorded by durable; the traceback where it was first raised:\n"


def _origin_note(exc: BaseException) -> str | None:
    """The note that records ``exc``'s traceback, unless it has none or already has one."""
    if exc.__traceback__ is None:
        return None
    if any(str(n).startswith(ORIGIN_NOTE) for n in getattr(exc, "__notes__", ())):
        return None
    return ORIGIN_NOTE + "".join(traceback.format_exception(exc)).rstrip()


def _drop_note(exc: BaseException, note: str | None) -> None:
    """Take the note back off the live exception (its own traceback already shows it)."""
    notes = getattr(exc, "__notes__", None)
    if note is None or notes is None or note not in notes:
        return
    notes.remove(note)
    if not notes:
        del exc.__notes__


def _names(names: frozenset[str] | None) -> str:
    return ", ".join(sorted(names or ()))


def _check_registered(codec: Codec) -> None:
    taken = _CODECS.get(codec.tag)
    if taken is not codec and (taken is None or type(taken) is not type(codec)):
        raise ValueError(f"codec {codec.name!r} is not registered: call register_codec() first")


def _type_name(cls: type) -> str:
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, _Unsupported) else f"{type(e).__name__}: {e}"


# --- JSON encoding -------------------------------------------------------------------------


class _Unsupported(TypeError):
    def __init__(self, value: object) -> None:
        super().__init__()
        self.type_name = _type_name(type(value))
        self.path: list[str] = []

    def __str__(self) -> str:
        where = "".join(reversed(self.path)) or "the top level"
        return f"the JSON codec cannot encode a {self.type_name} value (at {where})"


def _at(value: object, key: str) -> Any:
    try:
        return _enc(value)
    except _Unsupported as e:
        e.path.append(key)
        raise


def _class_path(cls: type) -> str:
    path = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in path or _lookup(path) is not cls:
        raise TypeError(
            f"{_type_name(cls)} cannot be found by name on decode; define it at module level"
        )
    return path


def _enc_tz(tz: tzinfo | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, ZoneInfo) and tz.key is not None:
        return {"zone": tz.key}
    if isinstance(tz, timezone):
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        plain = name == timezone(offset).tzname(None)
        return {"offset": offset // timedelta(microseconds=1), "name": None if plain else name}
    raise TypeError(f"the JSON codec cannot encode tzinfo {tz!r}; use timezone or ZoneInfo")


def _enc(v: object) -> Any:
    t = type(v)
    if v is None or t is bool or t is int or t is float or t is str:
        return v
    if isinstance(v, list) and t is list:
        return [_at(x, f"[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict) and t is dict:
        if _TAG not in v and all(type(k) is str for k in v):
            return {k: _at(x, f"[{k!r}]") for k, x in v.items()}
        items = [[_at(k, f"<key {i}>"), _at(x, f"[{k!r}]")] for i, (k, x) in enumerate(v.items())]
        return {_TAG: "dict", "items": items}
    if isinstance(v, tuple | set | frozenset) and t in (tuple, set, frozenset):
        return {_TAG: t.__name__, "items": [_at(x, f"[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, bytes) and t is bytes:
        return {_TAG: "bytes", "b64": base64.b64encode(v).decode()}
    if isinstance(v, datetime | time) and t in (datetime, time):
        tagged = {_TAG: t.__name__, "value": v.isoformat(), "tz": _enc_tz(v.tzinfo)}
        return tagged | ({"fold": 1} if v.fold else {})
    if isinstance(v, date) and t is date:
        return {_TAG: "date", "value": v.isoformat()}
    if isinstance(v, timedelta) and t is timedelta:
        return {_TAG: "timedelta", "value": [v.days, v.seconds, v.microseconds]}
    if isinstance(v, UUID | Decimal) and t in (UUID, Decimal):
        return {_TAG: t.__name__.lower(), "value": str(v)}
    if isinstance(v, Enum):
        return {_TAG: "enum", "type": _class_path(t), "value": _at(v.value, ".value")}
    if isinstance(v, BaseException):
        state = {}
        for k, x in vars(v).items():
            try:
                state[k] = _enc(x)
            except Exception:
                continue  # JSON keeps the attributes it can encode
        args = [_at(a, f".args[{i}]") for i, a in enumerate(v.args)]
        return {
            _TAG: "exception",
            "type": _class_path(t),
            "args": args,
            "message": str(v),
            "state": state,
        }
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = {f.name: _at(getattr(v, f.name), f".{f.name}") for f in dataclasses.fields(v)}
        return {_TAG: "dataclass", "type": _class_path(t), "value": fields}
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(v, pydantic.BaseModel):
        try:
            dumped = _enc(v.model_dump(mode="python", round_trip=True))
            mode = "python"
        except TypeError:
            dumped, mode = v.model_dump(mode="json", round_trip=True), "json"
        return {_TAG: "pydantic", "type": _class_path(t), "mode": mode, "value": dumped}
    raise _Unsupported(v)


# --- JSON decoding -------------------------------------------------------------------------


def _lookup(path: str) -> object:
    module, _, qualname = path.partition(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _allowed(path: str, kind: str) -> Any:
    cls = _lookup(path)
    pydantic = sys.modules.get("pydantic")
    ok = isinstance(cls, type) and (
        (kind == "dataclass" and dataclasses.is_dataclass(cls))
        or (kind == "enum" and issubclass(cls, Enum))
        or (kind == "exception" and issubclass(cls, BaseException))
        or (kind == "pydantic" and pydantic is not None and issubclass(cls, pydantic.BaseModel))
    )
    if not ok:
        raise ValueError(f"refusing to instantiate {path!r}: it is not a {kind} class")
    return cls


def _dec_tz(spec: Any) -> tzinfo | None:
    if spec is None:
        return None
    if "zone" in spec:
        return ZoneInfo(spec["zone"])
    offset = timedelta(microseconds=spec["offset"])
    return timezone(offset) if spec["name"] is None else timezone(offset, spec["name"])


def _dec(o: Any) -> Any:
    if isinstance(o, list):
        return [_dec(x) for x in o]
    if not isinstance(o, dict):
        return o
    kind = o.get(_TAG)
    if kind is None:
        return {k: _dec(x) for k, x in o.items()}
    match kind:
        case "tuple" | "set" | "frozenset" | "dict":
            items = [_dec(x) for x in o["items"]]
            return {"tuple": tuple, "set": set, "frozenset": frozenset, "dict": dict}[kind](items)
        case "bytes":
            return base64.b64decode(o["b64"], validate=True)
        case "datetime" | "time":
            parsed = (datetime if kind == "datetime" else time).fromisoformat(o["value"])
            return parsed.replace(tzinfo=_dec_tz(o["tz"]), fold=o.get("fold", 0))
        case "date":
            return date.fromisoformat(o["value"])
        case "timedelta":
            days, seconds, micros = o["value"]
            return timedelta(days=days, seconds=seconds, microseconds=micros)
        case "uuid":
            return UUID(o["value"])
        case "decimal":
            return Decimal(o["value"])
        case "enum":
            return _allowed(o["type"], "enum")(_dec(o["value"]))
        case "dataclass":
            cls = _allowed(o["type"], kind)
            kwargs = {k: _dec(x) for k, x in o["value"].items()}
            late = {
                f.name: kwargs.pop(f.name)
                for f in dataclasses.fields(cls)
                if not f.init and f.name in kwargs
            }
            obj = cls(**kwargs)
            for name, x in late.items():
                object.__setattr__(obj, name, x)
            return obj
        case "pydantic":
            cls = _allowed(o["type"], kind)
            if o["mode"] == "json":
                return cls.model_validate_json(json.dumps(o["value"]))
            return cls.model_validate(_dec(o["value"]))
        case "exception":
            return _dec_exception(o)
    raise ValueError(f"unknown JSON tag {kind!r}")


def _dec_exception(o: Any) -> BaseException:
    cls = _allowed(o["type"], "exception")
    args, state = tuple(_dec(o["args"])), _dec(o["state"])
    try:
        if issubclass(cls, DurableError):  # rebuilt from args and state, like its __reduce__
            exc: BaseException = cls.__new__(cls)
            exc.args = args
        else:
            exc = cls(*args)
        exc.__dict__.update(state)
    except Exception:
        module, _, qualname = o["type"].partition(":")
        return ActivityError(
            qualname if module == "builtins" else f"{module}.{qualname}", o["message"]
        )
    return exc
