"""Binary frames of the node-to-node transfer protocol and a sans-IO decoder for them.

Every frame is ``type: u8 | length: u32 big-endian | payload``. Message bodies travel as raw
DATA payloads (no base64), so a 25 MB envelope costs 25 MB plus 5 bytes per 64 KiB on the wire.

The decoder never reads a socket: it is fed bytes and hands back frames or one
:class:`DecodeFailed` event. Limits are checked on the 5-byte header, before any payload is
buffered, so a peer announcing a 4 GiB frame costs us 5 bytes of memory, not 4 GiB.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

HEADER = struct.Struct(">BI")
HEADER_SIZE = HEADER.size

PROTOCOL_VERSION = 1
KEY_SIZE = 32
CHALLENGE_SIZE = 32
SIGNATURE_SIZE = 64
MESSAGE_ID_SIZE = 16

DATA_CHUNK_SIZE = 64 * 1024
"""Largest DATA payload: big enough to stream fast, small enough to bound per-frame memory."""

MAX_REASON_SIZE = 1024
"""Reasons are for logs and bounce messages; anything longer is truncated when encoding."""

SECRET_SIZE = 16
"""An invite's one-time secret."""
MAX_LABEL = 32
MAX_ENDPOINTS = 8
MAX_HOST = 253
MAX_HELD_RECORD = 8192
"""Largest address record a HOLD may carry (the DHT's own records are smaller)."""
_LABEL_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")

Endpoint = tuple[str, int]
_PORT = struct.Struct(">H")


class FrameType(enum.IntEnum):
    CHALLENGE = 0x01
    AUTH = 0x02
    READY = 0x03
    OFFER = 0x10
    ACCEPT_OFFER = 0x11
    REJECT = 0x12
    DATA = 0x13
    END = 0x14
    RESULT = 0x15
    REDEEM = 0x20
    WELCOME = 0x21
    HOLD = 0x22
    PULL = 0x23
    DIALBACK = 0x24
    ERROR = 0x7F


class Status(enum.IntEnum):
    """Wire code of an offer rejection or a final result."""

    ACK = 0
    PERMANENT = 1
    TEMPFAIL = 2


class ErrorCode(enum.IntEnum):
    """Why a connection is being torn down (sent in an ERROR frame just before closing)."""

    MALFORMED = 1
    UNEXPECTED = 2
    AUTH_FAILED = 3
    TIMEOUT = 4
    FRAME_TOO_LARGE = 5
    UNSUPPORTED_VERSION = 6
    INTERNAL = 7


class ProtocolError(Exception):
    """The peer broke the protocol; carries the code we report back in an ERROR frame.

    This is the only exception the codec and the session state machines raise for bad input;
    anything else escaping them is a local bug.
    """

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}")
        self.code = code
        self.detail = detail


class PeerReportedError(ProtocolError):
    """The peer sent an ERROR frame: it is closing the connection on us."""


def _encode_reason(reason: str) -> bytes:
    raw = reason.encode("utf-8", "replace")[:MAX_REASON_SIZE]
    # Truncation may have split a code point; drop the partial tail.
    return raw.decode("utf-8", "ignore").encode("utf-8")


def _decode_reason(raw: bytes) -> str:
    """Peer-chosen text ends up in logs and bounces: no control characters (log injection)."""
    text = raw.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in text)


def _expect_length(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise ProtocolError(ErrorCode.MALFORMED, f"{what} payload must be {size} bytes")


@dataclass(frozen=True)
class Challenge:
    """Server's first frame: who it claims to be and a fresh nonce the client must sign."""

    TYPE: ClassVar[FrameType] = FrameType.CHALLENGE
    MIN_SIZE: ClassVar[int] = 1 + KEY_SIZE + CHALLENGE_SIZE
    MAX_SIZE: ClassVar[int] = 1 + KEY_SIZE + CHALLENGE_SIZE

    version: int
    server_key: bytes
    nonce: bytes

    def payload(self) -> bytes:
        return bytes([self.version]) + self.server_key + self.nonce

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        _expect_length(payload, cls.MIN_SIZE, "CHALLENGE")
        return cls(payload[0], payload[1 : 1 + KEY_SIZE], payload[1 + KEY_SIZE :])


@dataclass(frozen=True)
class Auth:
    """Client's proof of its node key, bound to the pinned server key and the nonce."""

    TYPE: ClassVar[FrameType] = FrameType.AUTH
    MIN_SIZE: ClassVar[int] = KEY_SIZE + SIGNATURE_SIZE
    MAX_SIZE: ClassVar[int] = KEY_SIZE + SIGNATURE_SIZE

    client_key: bytes
    signature: bytes

    def payload(self) -> bytes:
        return self.client_key + self.signature

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        _expect_length(payload, cls.MIN_SIZE, "AUTH")
        return cls(payload[:KEY_SIZE], payload[KEY_SIZE:])


@dataclass(frozen=True)
class _EmptyFrame:
    """A frame whose type is the whole message (READY, ACCEPT_OFFER, END)."""

    TYPE: ClassVar[FrameType]
    MIN_SIZE: ClassVar[int] = 0
    MAX_SIZE: ClassVar[int] = 0

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        _expect_length(payload, 0, cls.TYPE.name)
        return cls()


@dataclass(frozen=True)
class Ready(_EmptyFrame):
    """Server accepted the client's authentication; offers may follow."""

    TYPE: ClassVar[FrameType] = FrameType.READY


_OFFER = struct.Struct(f">{MESSAGE_ID_SIZE}s{KEY_SIZE}sQ")


@dataclass(frozen=True)
class Offer:
    """Announces a message before its body, so size limits are enforced before reading it."""

    TYPE: ClassVar[FrameType] = FrameType.OFFER
    MIN_SIZE: ClassVar[int] = _OFFER.size
    MAX_SIZE: ClassVar[int] = _OFFER.size

    message_id: bytes
    recipient_key: bytes
    size: int

    def payload(self) -> bytes:
        return _OFFER.pack(self.message_id, self.recipient_key, self.size)

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        _expect_length(payload, cls.MIN_SIZE, "OFFER")
        message_id, recipient_key, size = _OFFER.unpack(payload)
        return cls(message_id, recipient_key, size)


@dataclass(frozen=True)
class AcceptOffer(_EmptyFrame):
    """The receiver wants the body of the last offer."""

    TYPE: ClassVar[FrameType] = FrameType.ACCEPT_OFFER


def _parse_status(raw: int, *, allow_ack: bool) -> Status:
    try:
        status = Status(raw)
    except ValueError:
        raise ProtocolError(ErrorCode.MALFORMED, f"unknown status code {raw}") from None
    if status is Status.ACK and not allow_ack:
        raise ProtocolError(ErrorCode.MALFORMED, "a rejection cannot carry ACK")
    return status


@dataclass(frozen=True)
class _StatusFrame:
    """A status and a reason: the shape shared by REJECT and RESULT."""

    TYPE: ClassVar[FrameType]
    ALLOWS_ACK: ClassVar[bool]
    MIN_SIZE: ClassVar[int] = 1
    MAX_SIZE: ClassVar[int] = 1 + MAX_REASON_SIZE

    status: Status
    reason: str

    def payload(self) -> bytes:
        return bytes([self.status]) + _encode_reason(self.reason)

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        if not payload:
            raise ProtocolError(ErrorCode.MALFORMED, f"{cls.TYPE.name} without status")
        return cls(_parse_status(payload[0], allow_ack=cls.ALLOWS_ACK),
                   _decode_reason(payload[1:]))


@dataclass(frozen=True)
class Reject(_StatusFrame):
    """The receiver refuses the last offer without reading its body."""

    TYPE: ClassVar[FrameType] = FrameType.REJECT
    ALLOWS_ACK: ClassVar[bool] = False


@dataclass(frozen=True)
class Data:
    """One chunk of the offered message body."""

    TYPE: ClassVar[FrameType] = FrameType.DATA
    MIN_SIZE: ClassVar[int] = 1
    MAX_SIZE: ClassVar[int] = DATA_CHUNK_SIZE

    chunk: bytes

    def payload(self) -> bytes:
        return self.chunk

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        if not payload:
            raise ProtocolError(ErrorCode.MALFORMED, "empty DATA frame")
        return cls(payload)


@dataclass(frozen=True)
class End(_EmptyFrame):
    """The whole body has been sent."""

    TYPE: ClassVar[FrameType] = FrameType.END


@dataclass(frozen=True)
class Result(_StatusFrame):
    """Final word on a message; ACK is only sent once the receiver has durably stored it."""

    TYPE: ClassVar[FrameType] = FrameType.RESULT
    ALLOWS_ACK: ClassVar[bool] = True


def check_label(label: str) -> str:
    """A node's short name as friends see it: 1..32 of ``a-z 0-9 - _ .`` (it is shown in
    ``friend list`` and typed in ``friend remove``, so nothing that needs quoting)."""
    raw = label.encode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_LABEL or not set(raw) <= _LABEL_CHARS:
        raise ValueError(f"a node name is 1..{MAX_LABEL} of a-z, 0-9, '-', '_', '.'")
    return label


def encode_endpoints(endpoints: tuple[Endpoint, ...]) -> bytes:
    if len(endpoints) > MAX_ENDPOINTS:
        raise ValueError(f"at most {MAX_ENDPOINTS} endpoints")
    parts = [bytes([len(endpoints)])]
    for host, port in endpoints:
        raw = host.encode("ascii")
        if not 1 <= len(raw) <= MAX_HOST or not 0 < port < 65536:
            raise ValueError("bad endpoint")
        parts += [bytes([len(raw)]), raw, _PORT.pack(port)]
    return b"".join(parts)


def decode_endpoints(data: bytes, pos: int) -> tuple[tuple[Endpoint, ...], int]:
    """Endpoints at ``data[pos:]`` and where they end; ProtocolError when malformed."""
    def bad(why: str) -> ProtocolError:
        return ProtocolError(ErrorCode.MALFORMED, f"endpoints: {why}")
    if pos >= len(data):
        raise bad("missing count")
    count = data[pos]
    pos += 1
    if count > MAX_ENDPOINTS:
        raise bad("too many")
    out: list[Endpoint] = []
    for _ in range(count):
        if pos >= len(data):
            raise bad("truncated")
        length = data[pos]
        end = pos + 1 + length
        if not 1 <= length <= MAX_HOST or end + _PORT.size > len(data):
            raise bad("truncated or empty host")
        raw = data[pos + 1 : end]
        if any(not 0x21 <= b <= 0x7E for b in raw):
            raise bad("host is not printable ASCII")
        (port,) = _PORT.unpack_from(data, end)
        if port == 0:
            raise bad("port 0")
        out.append((raw.decode("ascii"), port))
        pos = end + _PORT.size
    return tuple(out), pos


def _encode_label(label: str) -> bytes:
    raw = check_label(label).encode("ascii")
    return bytes([len(raw)]) + raw


def _decode_label(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise ProtocolError(ErrorCode.MALFORMED, "missing node name")
    end = pos + 1 + data[pos]
    if end > len(data):
        raise ProtocolError(ErrorCode.MALFORMED, "node name truncated")
    try:
        label = check_label(data[pos + 1 : end].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad node name: {exc}") from None
    return label, end


_HOLD_TERMS = struct.Struct(">QH")  # bytes, days


@dataclass(frozen=True)
class Redeem:
    """A new friend presents an invite's secret, saying what it will hold for the inviter's
    users and where it can be reached (the inviter learned nothing else about it)."""

    TYPE: ClassVar[FrameType] = FrameType.REDEEM
    MIN_SIZE: ClassVar[int] = SECRET_SIZE + _HOLD_TERMS.size + 2 + 1
    MAX_SIZE: ClassVar[int] = (SECRET_SIZE + _HOLD_TERMS.size + 1 + MAX_LABEL + 1
                               + MAX_ENDPOINTS * (1 + MAX_HOST + 2))

    secret: bytes
    hold_bytes: int
    hold_days: int
    label: str
    endpoints: tuple[Endpoint, ...]

    def payload(self) -> bytes:
        return (self.secret + _HOLD_TERMS.pack(self.hold_bytes, self.hold_days)
                + _encode_label(self.label) + encode_endpoints(self.endpoints))

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        secret = payload[:SECRET_SIZE]
        hold_bytes, hold_days = _HOLD_TERMS.unpack_from(payload, SECRET_SIZE)
        label, pos = _decode_label(payload, SECRET_SIZE + _HOLD_TERMS.size)
        endpoints, pos = decode_endpoints(payload, pos)
        if pos != len(payload):
            raise ProtocolError(ErrorCode.MALFORMED, "trailing bytes in REDEEM")
        return cls(secret, hold_bytes, hold_days, label, endpoints)


@dataclass(frozen=True)
class Welcome:
    """The inviter's side of a redeemed invite: what it holds for the new friend's users."""

    TYPE: ClassVar[FrameType] = FrameType.WELCOME
    MIN_SIZE: ClassVar[int] = _HOLD_TERMS.size + 2
    MAX_SIZE: ClassVar[int] = _HOLD_TERMS.size + 1 + MAX_LABEL

    hold_bytes: int
    hold_days: int
    label: str

    def payload(self) -> bytes:
        return _HOLD_TERMS.pack(self.hold_bytes, self.hold_days) + _encode_label(self.label)

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        hold_bytes, hold_days = _HOLD_TERMS.unpack_from(payload)
        label, pos = _decode_label(payload, _HOLD_TERMS.size)
        if pos != len(payload):
            raise ProtocolError(ErrorCode.MALFORMED, "trailing bytes in WELCOME")
        return cls(hold_bytes, hold_days, label)


@dataclass(frozen=True)
class Hold:
    """An OFFER to a relay: keep this sealed envelope for a user whose node is away.

    It carries the recipient's signed address record, which names the recipient's node and
    so lets the relay check that node is its friend; the sender stays unknown to the relay.
    """

    TYPE: ClassVar[FrameType] = FrameType.HOLD
    MIN_SIZE: ClassVar[int] = _OFFER.size + 1
    MAX_SIZE: ClassVar[int] = _OFFER.size + MAX_HELD_RECORD

    message_id: bytes
    recipient_key: bytes
    size: int
    record: bytes

    def payload(self) -> bytes:
        return _OFFER.pack(self.message_id, self.recipient_key, self.size) + self.record

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        message_id, recipient_key, size = _OFFER.unpack_from(payload)
        return cls(message_id, recipient_key, size, payload[_OFFER.size:])


@dataclass(frozen=True)
class Pull(_EmptyFrame):
    """The client asks for what the server holds for it; the roles turn: the server now
    offers (OFFER, DATA, END) and the client answers (ACCEPT_OFFER, REJECT, RESULT) until
    the server closes the connection."""

    TYPE: ClassVar[FrameType] = FrameType.PULL


@dataclass(frozen=True)
class Dialback:
    """A friend asks us to connect to its endpoints (as a stranger on the Internet would) and
    say whether its node answered there: what a node cannot learn by dialling itself."""

    TYPE: ClassVar[FrameType] = FrameType.DIALBACK
    MIN_SIZE: ClassVar[int] = 1 + 1 + 1 + 2
    MAX_SIZE: ClassVar[int] = 1 + MAX_ENDPOINTS * (1 + MAX_HOST + 2)

    endpoints: tuple[Endpoint, ...]

    def payload(self) -> bytes:
        return encode_endpoints(self.endpoints)

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        endpoints, pos = decode_endpoints(payload, 0)
        if pos != len(payload) or not endpoints:
            raise ProtocolError(ErrorCode.MALFORMED, "DIALBACK needs 1..8 endpoints, nothing more")
        return cls(endpoints)


@dataclass(frozen=True)
class Error:
    """Sent just before closing, so the peer's logs say why instead of 'connection reset'."""

    TYPE: ClassVar[FrameType] = FrameType.ERROR
    MIN_SIZE: ClassVar[int] = 1
    MAX_SIZE: ClassVar[int] = 1 + MAX_REASON_SIZE

    code: ErrorCode
    reason: str

    def payload(self) -> bytes:
        return bytes([self.code]) + _encode_reason(self.reason)

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        if not payload:
            raise ProtocolError(ErrorCode.MALFORMED, "ERROR without code")
        try:
            code = ErrorCode(payload[0])
        except ValueError:
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown error code {payload[0]}") from None
        return cls(code, _decode_reason(payload[1:]))


Frame = (Challenge | Auth | Ready | Offer | AcceptOffer | Reject | Data | End | Result
         | Redeem | Welcome | Hold | Pull | Dialback | Error)

_FRAME_CLASSES: dict[int, type[Frame]] = {
    cls.TYPE: cls
    for cls in (Challenge, Auth, Ready, Offer, AcceptOffer, Reject, Data, End, Result,
                Redeem, Welcome, Hold, Pull, Dialback, Error)
}

MAX_FRAME_SIZE = max(cls.MAX_SIZE for cls in _FRAME_CLASSES.values())


def encode(frame: Frame) -> bytes:
    """Serialise one frame, header included."""
    payload = frame.payload()
    if not frame.MIN_SIZE <= len(payload) <= frame.MAX_SIZE:
        raise ValueError(f"{frame.TYPE.name} payload of {len(payload)} bytes is out of range")
    return HEADER.pack(frame.TYPE, len(payload)) + payload


@dataclass(frozen=True)
class DecodeFailed:
    """The byte stream is not a valid frame sequence; the connection must be closed."""

    error: ProtocolError


DecoderEvent = Frame | DecodeFailed


class FrameDecoder:
    """Incremental frame parser: feed bytes, pull frames.

    After a failure the decoder is dead (it reports the failure once, then nothing), since
    there is no way to resynchronise a length-prefixed stream.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failed = False
        self._expected: frozenset[int] | None = None

    def expect(self, types: frozenset[int] | None) -> None:
        """Only frames of these types may come next (None: any).

        Checked on the type byte, before the length is read or a payload buffered: a peer
        that is not yet authenticated can make us hold at most one small AUTH frame.
        """
        self._expected = types

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned as frames (bounded by one frame plus one read)."""
        return len(self._buffer)

    def take(self) -> bytes:
        """Hand over the bytes not yet decoded (the connection changes hands: PULL)."""
        out = bytes(self._buffer)
        self._buffer.clear()
        return out

    def feed(self, data: bytes) -> None:
        if not self._failed:
            self._buffer += data

    def next_event(self) -> DecoderEvent | None:
        """Return the next complete frame, a failure, or None if more bytes are needed."""
        if self._failed:
            return None
        try:
            return self._next_frame()
        except ProtocolError as exc:
            self._failed = True
            self._buffer.clear()
            return DecodeFailed(exc)

    def events(self, data: bytes = b"") -> list[DecoderEvent]:
        """Feed ``data`` and drain every complete event (convenient in tests and tools)."""
        self.feed(data)
        out: list[DecoderEvent] = []
        while (event := self.next_event()) is not None:
            out.append(event)
        return out

    def _next_frame(self) -> Frame | None:
        buffer = self._buffer
        if not buffer:
            return None
        cls = _FRAME_CLASSES.get(buffer[0])
        if cls is None:
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown frame type 0x{buffer[0]:02x}")
        if self._expected is not None and cls.TYPE not in self._expected:
            raise ProtocolError(ErrorCode.UNEXPECTED, f"{cls.TYPE.name} frame not expected now")
        if len(buffer) < HEADER_SIZE:
            return None
        _, length = HEADER.unpack_from(buffer)
        if length > cls.MAX_SIZE:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"{cls.TYPE.name} frame of {length} bytes exceeds {cls.MAX_SIZE}",
            )
        if length < cls.MIN_SIZE:
            raise ProtocolError(
                ErrorCode.MALFORMED, f"{cls.TYPE.name} frame of {length} bytes is too short"
            )
        end = HEADER_SIZE + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[HEADER_SIZE:end])
        del buffer[:end]
        return cls.parse(payload)
