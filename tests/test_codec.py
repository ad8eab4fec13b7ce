"""The payload codecs: envelope, JSON round trips, corruption detection and recorded errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pydantic
import pytest

import durable
from durable._codec import (
    DEFAULT_CODEC,
    MAGIC,
    JSONCodec,
    PickleCodec,
    dumps,
    dumps_error,
    loads,
    register_codec,
)
from durable._decorators import definition_of
from durable._errors import ActivityError, PayloadDecodeError, SerializationError

JSON = JSONCodec()
PICKLE = PickleCodec()
CODECS = [pytest.param(PICKLE, id="pickle"), pytest.param(JSON, id="json")]


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class Order:
    id: UUID
    color: Color
    points: list[Point]
    corner: tuple[Point, Point]
    when: datetime
    total: Decimal
    tags: set[str] = field(default_factory=set)
    count: int = field(default=0, init=False)


class Address(pydantic.BaseModel):
    city: str
    zip: str


class Customer(pydantic.BaseModel):
    name: str
    joined: datetime
    address: Address
    level: Level
    extra: Any = None


class WithLock(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.lock = threading.Lock()


class NeedsTwo(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class NotAllowed:
    instantiated = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        NotAllowed.instantiated = True


def roundtrip(codec: Any, value: object) -> object:
    return loads(dumps(codec, value, what="value"), run_id="r-1", seq=3, what="result")


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**80),
        1.5,
        float("inf"),
        "héllo",
        [1, "a", None],
        {"a": [1, 2], "b": {"c": None}},
        {1: "one", 2: "two"},
        {(1, 2): "tuple key", None: 0},
        {"__durable__": "not a tag", "x": 1},
        (1, 2, (3,)),
        [(1, 2), [3, 4]],
        {1, 2, 3},
        frozenset({"a", "b"}),
        b"\x00\xffbytes",
        date(2024, 2, 29),
        time(12, 30, 5, 7),
        time(12, 30, tzinfo=timezone(timedelta(hours=-3))),
        timedelta(days=-2, seconds=5, microseconds=3),
        datetime(2024, 1, 2, 3, 4, 5, 6),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30), "IST")),
        datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
        UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("3.1415926535897932384626"),
        Decimal("-0"),
        Color.BLUE,
        Level.HIGH,
        Point(1, 2),
    ],
)
def test_json_round_trips_supported_values(value: object) -> None:
    decoded = roundtrip(JSON, value)
    assert decoded == value
    assert type(decoded) is type(value)


def test_json_keeps_timezones_exactly() -> None:
    utc = roundtrip(JSON, datetime(2024, 1, 1, tzinfo=UTC))
    assert isinstance(utc, datetime)
    assert utc.tzinfo is UTC
    ist = roundtrip(JSON, datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5), "X")))
    assert isinstance(ist, datetime)
    assert ist.tzname() == "X"
    assert ist.utcoffset() == timedelta(hours=5)
    ny = roundtrip(JSON, datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1))
    assert isinstance(ny, datetime)
    assert ny.tzinfo == ZoneInfo("America/New_York")
    assert ny.fold == 1
    assert ny.utcoffset() == timedelta(hours=-5)


def test_json_tuple_stays_tuple_and_list_stays_list() -> None:
    decoded = roundtrip(JSON, {"t": (1, [2, (3, 4)]), "l": [1, (2,)]})
    assert decoded == {"t": (1, [2, (3, 4)]), "l": [1, (2,)]}
    assert isinstance(decoded, dict)
    assert type(decoded["t"]) is tuple
    assert type(decoded["t"][1]) is list
    assert type(decoded["t"][1][1]) is tuple


def test_json_round_trips_nested_dataclass_with_enum() -> None:
    order = Order(
        id=UUID(int=7),
        color=Color.RED,
        points=[Point(1, 2), Point(3, 4)],
        corner=(Point(0, 0), Point(9, 9)),
        when=datetime(2024, 5, 6, 7, 8, tzinfo=UTC),
        total=Decimal("19.99"),
        tags={"a", "b"},
    )
    order.count = 5  # an init=False field keeps its value too
    decoded = roundtrip(JSON, order)
    assert decoded == order
    assert isinstance(decoded, Order)
    assert decoded.color is Color.RED
    assert decoded.count == 5
    assert type(decoded.corner) is tuple
    assert isinstance(decoded.corner[0], Point)


def test_json_plain_data_stays_plain_json() -> None:
    data = dumps(JSON, {"a": [1, 2.5, "x", None, True]}, what="value")
    assert data[:2] == MAGIC + b"j"
    assert json.loads(data[6:]) == {"a": [1, 2.5, "x", None, True]}


def test_json_round_trips_pydantic_model() -> None:
    customer = Customer(
        name="Ada",
        joined=datetime(2020, 1, 1, tzinfo=UTC),
        address=Address(city="Paris", zip="75001"),
        level=Level.HIGH,
        extra=(1, 2),
    )
    decoded = roundtrip(JSON, customer)
    assert decoded == customer
    assert isinstance(decoded, Customer)
    assert isinstance(decoded.address, Address)
    assert decoded.level is Level.HIGH
    assert decoded.extra == (1, 2)


def test_pickle_round_trips_lambda_and_local_class() -> None:
    @dataclass
    class Local:
        fn: Any
        base: int

    decoded = roundtrip(DEFAULT_CODEC, Local(fn=lambda n: n * 3, base=2))
    assert isinstance(decoded, Local)
    assert decoded.base == 2
    assert decoded.fn(5) == 15


def test_envelope_layout() -> None:
    data = dumps(PICKLE, [1, 2], what="value")
    assert data[:1] == MAGIC
    assert data[1:2] == b"p"
    assert int.from_bytes(data[2:6], "big") == zlib.crc32(data[6:], zlib.crc32(b"p"))
    assert pickle.loads(data[6:]) == [1, 2]


def test_json_unsupported_value_raises_serialization_error_naming_what() -> None:
    with pytest.raises(SerializationError) as info:
        dumps(JSON, {"ok": 1, "bad": [threading.Lock()]}, what="result of activity 'shop.charge'")
    err = info.value
    assert err.what == "result of activity 'shop.charge'"
    assert "result of activity 'shop.charge'" in str(err)
    assert err.type_name == "dict"
    assert "lock" in err.reason
    assert "['bad'][0]" in err.reason


def test_json_refuses_local_class() -> None:
    @dataclass
    class Local:
        x: int

    with pytest.raises(SerializationError, match="module level"):
        dumps(JSON, Local(1), what="arguments")


def test_pickle_unpicklable_value_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="arguments of workflow 'w'") as info:
        dumps(PICKLE, threading.Lock(), what="arguments of workflow 'w'")
    assert info.value.type_name == "_thread.lock"


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _corruptions(data: bytes) -> list[tuple[bytes, str]]:
    return [
        (data[:-3], "checksum"),
        (data[:4], "truncated"),
        (b"", "truncated"),
        (_flip(data, len(data) - 2), "checksum"),
        (_flip(data, 8), "checksum"),
        (_flip(data, 3), "checksum"),
        (b"\x80" + data[1:], "magic"),
        (data[:1] + b"?" + data[2:], "unknown codec tag"),
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_corrupt_payloads_raise_payload_decode_error(codec: Any) -> None:
    data = dumps(codec, {"amount": 100, "currency": "EUR", "items": list(range(20))}, what="x")
    for bad, reason in _corruptions(data):
        with pytest.raises(PayloadDecodeError) as info:
            loads(bad, run_id="order-42", seq=7, what="result")
        err = info.value
        assert (err.run_id, err.seq, err.what) == ("order-42", 7, "result")
        assert "'order-42'" in str(err)
        assert "step 7" in str(err)
        assert reason in err.reason


def test_every_single_byte_flip_is_detected() -> None:
    data = dumps(PICKLE, {"amount": 100, "to": "acct-1"}, what="x")
    for i in range(len(data)):
        with pytest.raises(PayloadDecodeError):
            loads(_flip(data, i), run_id="r", seq=1, what="result")


def test_decode_error_for_run_record_names_the_run() -> None:
    with pytest.raises(PayloadDecodeError, match="run 'r-9' at the run record"):
        loads(b"junk-bytes", run_id="r-9", seq=None, what="arguments")


def _json_payload(doc: object) -> bytes:
    body = json.dumps(doc).encode()
    crc = zlib.crc32(body, zlib.crc32(b"j"))
    return MAGIC + b"j" + crc.to_bytes(4, "big") + body


@pytest.mark.parametrize("kind", ["dataclass", "enum", "exception", "pydantic"])
def test_json_refuses_to_instantiate_non_allowed_class(kind: str) -> None:
    NotAllowed.instantiated = False
    doc = {
        "__durable__": kind,
        "type": f"{__name__}:NotAllowed",
        "value": {},
        "args": [],
        "state": {},
        "message": "",
        "mode": "json",
    }
    with pytest.raises(PayloadDecodeError, match="refusing to instantiate") as info:
        loads(_json_payload(doc), run_id="r-1", seq=2, what="result")
    assert "step 2" in str(info.value)
    assert NotAllowed.instantiated is False


def test_json_refuses_functions_named_in_payload() -> None:
    doc = {"__durable__": "dataclass", "type": "os:system", "value": {"command": "true"}}
    with pytest.raises(PayloadDecodeError, match="refusing to instantiate 'os:system'"):
        loads(_json_payload(doc), run_id="r-1", seq=2, what="result")


def test_json_class_that_no_longer_exists_raises_payload_decode_error() -> None:
    doc = {"__durable__": "dataclass", "type": f"{__name__}:Gone", "value": {}}
    with pytest.raises(PayloadDecodeError, match="Gone"):
        loads(_json_payload(doc), run_id="r-1", seq=4, what="result")


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _assert_equal_activity_errors(a: object, b: ActivityError) -> None:
    assert type(a) is ActivityError
    assert (a.args, a.type_name, a.message, a.traceback) == (
        b.args,
        b.type_name,
        b.message,
        b.traceback,
    )


def test_dumps_error_unpicklable_exception_becomes_activity_error() -> None:
    exc = _raise(WithLock("disk on fire"))
    data, seen = dumps_error(PICKLE, exc, what="error of activity 'a'")
    assert isinstance(seen, ActivityError)
    assert seen.type_name == f"{__name__}.WithLock"
    assert seen.message == "disk on fire"
    assert "Traceback" in seen.traceback
    assert "disk on fire" in seen.traceback
    assert "_raise" in seen.traceback
    _assert_equal_activity_errors(loads(data, run_id="r", seq=1, what="error"), seen)


@pytest.mark.parametrize("codec", CODECS)
def test_dumps_error_custom_init_exception_becomes_activity_error(codec: Any) -> None:
    exc = _raise(NeedsTwo(404, "not found"))
    data, seen = dumps_error(codec, exc, what="error of activity 'a'")
    assert isinstance(seen, ActivityError)
    assert seen.type_name == f"{__name__}.NeedsTwo"
    assert seen.message == "404: not found"
    assert "NeedsTwo" in seen.traceback
    _assert_equal_activity_errors(loads(data, run_id="r", seq=1, what="error"), seen)


def test_dumps_error_json_drops_unencodable_attributes_consistently() -> None:
    exc = _raise(ValueError("boom"))
    exc.lock = threading.Lock()  # type: ignore[attr-defined]
    exc.code = 3  # type: ignore[attr-defined]
    data, seen = dumps_error(JSON, exc, what="error")
    assert type(seen) is ValueError
    assert seen is not exc  # the first run sees what a replay sees
    assert not hasattr(seen, "lock")
    assert seen.code == 3  # type: ignore[attr-defined]
    replayed = loads(data, run_id="r", seq=1, what="error")
    assert type(replayed) is ValueError
    assert replayed.args == seen.args == ("boom",)
    assert not hasattr(replayed, "lock")
    assert replayed.code == 3  # type: ignore[attr-defined]


def test_dumps_error_local_exception_class_under_json_becomes_activity_error() -> None:
    class LocalError(Exception):
        pass

    data, seen = dumps_error(JSON, _raise(LocalError("x")), what="error")
    assert isinstance(seen, ActivityError)
    assert seen.type_name.endswith("LocalError")
    _assert_equal_activity_errors(loads(data, run_id="r", seq=1, what="error"), seen)


@pytest.mark.parametrize("codec", CODECS)
def test_dumps_error_value_error_round_trips(codec: Any) -> None:
    exc = _raise(ValueError("bad amount", 42))
    exc.add_note("while charging")
    data, seen = dumps_error(codec, exc, what="error")
    if isinstance(codec, PickleCodec):
        assert seen is exc  # keeps its traceback
    assert type(seen) is ValueError
    assert seen.args == ("bad amount", 42)
    replayed = loads(data, run_id="r", seq=1, what="error")
    assert type(replayed) is ValueError
    assert isinstance(replayed, ValueError)
    assert replayed.args == ("bad amount", 42)
    # its own note, then the traceback where it was first raised
    first, origin = replayed.__notes__
    assert first == "while charging"
    assert origin.startswith("Recorded by durable") and "_raise" in origin
    assert exc.__notes__ == ["while charging"]  # the live exception is left as it was


@pytest.mark.parametrize("codec", CODECS)
def test_activity_error_round_trips_with_fields(codec: Any) -> None:
    err = ActivityError("pkg.Boom", "it broke", "Traceback ...")
    decoded = roundtrip(codec, err)
    _assert_equal_activity_errors(decoded, err)


def test_json_exception_with_custom_attributes_keeps_them() -> None:
    exc = KeyError("k")
    exc.code = 7  # type: ignore[attr-defined]
    decoded = roundtrip(JSON, exc)
    assert type(decoded) is KeyError
    assert decoded.args == ("k",)
    assert decoded.code == 7  # type: ignore[attr-defined]


def test_register_codec_rejects_taken_tag_and_bad_tags() -> None:
    class Other:
        name = "other"
        tag = b"p"

        def encode(self, value: object) -> bytes:
            return b""

        def decode(self, data: bytes) -> object:
            return None

    with pytest.raises(ValueError, match="already taken"):
        register_codec(Other())
    Other.tag = b"pp"
    with pytest.raises(ValueError, match="exactly one byte"):
        register_codec(Other())
    register_codec(PickleCodec())  # the same codec again is fine
    assert roundtrip(DEFAULT_CODEC, 1) == 1


def test_dumps_refuses_unregistered_codec() -> None:
    class Unregistered:
        name = "unregistered"
        tag = b"U"

        def encode(self, value: object) -> bytes:
            return repr(value).encode()

        def decode(self, data: bytes) -> object:
            return data.decode()

    with pytest.raises(ValueError, match="not registered"):
        dumps(Unregistered(), 1, what="value")


MAIN_PROGRAM = """
import sys, dataclasses
import durable
from durable._codec import PickleCodec

@dataclasses.dataclass
class Cart:
    total: int

    @durable.activity
    async def charge(self) -> int:
        return self.total

if sys.argv[1] == "encode":
    sys.stdout.buffer.write(PickleCodec().encode(Cart(30)))
else:
    cart = PickleCodec().decode(sys.stdin.buffer.read())
    print(isinstance(cart, Cart), type(Cart.__dict__["charge"]).__name__, cart.total)
"""


def test_main_classes_decode_as_the_same_class_when_the_script_runs_again(
    tmp_path: Path,
) -> None:
    script = tmp_path / "shop.py"
    script.write_text(MAIN_PROGRAM)
    body = subprocess.run(
        [sys.executable, str(script), "encode"], capture_output=True, check=True, cwd=tmp_path
    ).stdout
    out = subprocess.run(
        [sys.executable, str(script), "decode"],
        input=body,
        capture_output=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.decode().split() == ["True", "_Durable", "30"]


def test_local_functions_and_decorated_functions_round_trip() -> None:
    local = PickleCodec().decode(PickleCodec().encode(lambda x: x + 1))
    assert local(1) == 2  # type: ignore[operator]
    copy = PickleCodec().decode(PickleCodec().encode(module_activity))
    assert copy is module_activity  # by reference: still the decorated activity
    assert definition_of(copy) is not None


@durable.activity
async def module_activity() -> int:
    return 1
