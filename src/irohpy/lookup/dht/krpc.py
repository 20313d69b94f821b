"""KRPC messages (BEP 5, BEP 44): typed queries, responses and errors, with strict parsing.

Every message is a bencoded dictionary with a transaction id ``t`` and a kind ``y``: ``q``
(query: method ``q`` and arguments ``a``), ``r`` (response values) or ``e`` (``[code, text]``).
Parsing checks the type and length of every field we read, so a peer's garbage surfaces as
:class:`KrpcError` and never as a ``KeyError`` deep in the node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from irohpy.errors import BencodeError, KrpcError
from irohpy.lookup.dht import bencode

ID_LENGTH = 20
COMPACT_NODE_LENGTH = 26
MAX_TRANSACTION_ID = 32

# KRPC error codes (BEP 5 and BEP 44).
GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204
MESSAGE_TOO_BIG = 205
INVALID_SIGNATURE = 206
CAS_MISMATCH = 301
SEQ_TOO_LOW = 302


@dataclass(frozen=True)
class NodeInfo:
    """A DHT node as carried in compact node info: 20-byte id, IPv4 address and UDP port."""

    node_id: bytes
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def encode_nodes(nodes: list[NodeInfo] | tuple[NodeInfo, ...]) -> bytes:
    """Compact node info: 26 bytes per node (id, IPv4, big-endian port)."""
    return b"".join(
        n.node_id + ipaddress.IPv4Address(n.host).packed + n.port.to_bytes(2, "big") for n in nodes
    )


def decode_nodes(data: bytes) -> tuple[NodeInfo, ...]:
    """Parse compact node info; entries with port 0 (unusable) are dropped."""
    if len(data) % COMPACT_NODE_LENGTH:
        raise KrpcError(f"compact node info of {len(data)} bytes is not a multiple of 26")
    out = []
    for off in range(0, len(data), COMPACT_NODE_LENGTH):
        chunk = data[off : off + COMPACT_NODE_LENGTH]
        port = int.from_bytes(chunk[24:26], "big")
        if port:
            out.append(NodeInfo(chunk[:20], str(ipaddress.IPv4Address(chunk[20:24])), port))
    return tuple(out)


@dataclass(frozen=True)
class Query:
    """A query. ``target`` is find_node/get ``target`` or get_peers/announce_peer ``info_hash``."""

    t: bytes
    method: str
    node_id: bytes
    target: bytes | None = None
    token: bytes | None = None
    port: int | None = None
    implied_port: bool = False
    k: bytes | None = None
    seq: int | None = None
    v: bytes | None = None
    sig: bytes | None = None
    cas: int | None = None
    salt: bytes | None = None


@dataclass(frozen=True)
class Response:
    """A response; only the fields ping, find_node, get_peers and BEP 44 get/put use."""

    t: bytes
    node_id: bytes
    nodes: tuple[NodeInfo, ...] = ()
    token: bytes | None = None
    values: tuple[tuple[str, int], ...] = ()
    k: bytes | None = None
    seq: int | None = None
    v: bytes | None = None
    sig: bytes | None = None


@dataclass(frozen=True)
class ErrorReply:
    t: bytes
    code: int
    message: str


Message = Query | Response | ErrorReply


def encode(message: Message) -> bytes:
    if isinstance(message, Query):
        args: dict[bytes, bencode.Value] = {b"id": message.node_id}
        target_key = b"info_hash" if message.method in ("get_peers", "announce_peer") else b"target"
        optional: dict[bytes, object] = {
            target_key: message.target,
            b"token": message.token,
            b"port": message.port,
            b"k": message.k,
            b"seq": message.seq,
            b"v": message.v,
            b"sig": message.sig,
            b"cas": message.cas,
            b"salt": message.salt,
        }
        args.update({key: val for key, val in optional.items() if val is not None})  # type: ignore[misc]
        if message.implied_port:
            args[b"implied_port"] = 1
        body: dict[bytes, bencode.Value] = {b"y": b"q", b"q": message.method.encode(), b"a": args}
    elif isinstance(message, Response):
        values: dict[bytes, bencode.Value] = {b"id": message.node_id}
        if message.nodes:
            values[b"nodes"] = encode_nodes(message.nodes)
        if message.values:
            values[b"values"] = [
                ipaddress.IPv4Address(h).packed + p.to_bytes(2, "big") for h, p in message.values
            ]
        fields: dict[bytes, object] = {
            b"token": message.token,
            b"k": message.k,
            b"seq": message.seq,
            b"v": message.v,
            b"sig": message.sig,
        }
        values.update({key: val for key, val in fields.items() if val is not None})  # type: ignore[misc]
        body = {b"y": b"r", b"r": values}
    else:
        body = {b"y": b"e", b"e": [message.code, message.message.encode("utf-8", "replace")]}
    body[b"t"] = message.t
    return bencode.encode(body)


def decode(data: bytes) -> Message:
    """Parse one datagram; raises only BencodeError or KrpcError."""
    top = bencode.decode(data)
    if not isinstance(top, dict):
        raise KrpcError("a KRPC message is a dictionary")
    t = _get(top, b"t", bytes, required=True)
    assert t is not None
    if not 0 < len(t) <= MAX_TRANSACTION_ID:
        raise KrpcError(f"transaction id of {len(t)} bytes")
    kind = _get(top, b"y", bytes, required=True)
    if kind == b"q":
        return _decode_query(top, t)
    if kind == b"r":
        return _decode_response(top, t)
    if kind == b"e":
        err = top.get(b"e")
        if not (isinstance(err, list) and len(err) >= 2 and isinstance(err[0], int)
                and not isinstance(err[0], bool) and isinstance(err[1], bytes)):
            raise KrpcError("error reply is not [code, message]")
        return ErrorReply(t, err[0], err[1].decode("utf-8", "replace"))
    raise KrpcError(f"unknown message kind {kind!r}")


def _decode_query(top: dict[bytes, bencode.Value], t: bytes) -> Query:
    method_raw = _get(top, b"q", bytes, required=True)
    assert method_raw is not None
    if not method_raw.isascii() or not 0 < len(method_raw) <= 32:
        raise KrpcError("query method is not a short ASCII name")
    args = top.get(b"a")
    if not isinstance(args, dict):
        raise KrpcError("query arguments are not a dictionary")
    node_id = _get_fixed(args, b"id", ID_LENGTH, required=True)
    assert node_id is not None
    method = method_raw.decode()
    target_key = b"info_hash" if method in ("get_peers", "announce_peer") else b"target"
    port = _get(args, b"port", int)
    if port is not None and not 0 <= port <= 0xFFFF:
        raise KrpcError("port out of range")
    seq = _get(args, b"seq", int)
    if seq is not None and seq < 0:
        raise KrpcError("negative seq")
    query = Query(
        t=t,
        method=method,
        node_id=node_id,
        target=_get_fixed(args, target_key, ID_LENGTH),
        token=_get(args, b"token", bytes),
        port=port,
        implied_port=bool(_get(args, b"implied_port", int)),
        k=_get_fixed(args, b"k", 32),
        seq=seq,
        v=_get(args, b"v", bytes),
        sig=_get_fixed(args, b"sig", 64),
        cas=_get(args, b"cas", int),
        salt=_get(args, b"salt", bytes),
    )
    if method in ("find_node", "get_peers", "get") and query.target is None:
        raise KrpcError(f"{method} without a target")
    if method == "announce_peer" and (query.target is None or query.token is None or port is None):
        raise KrpcError("announce_peer needs info_hash, port and token")
    if method == "put" and None in (query.token, query.k, query.seq, query.v, query.sig):
        raise KrpcError("put (mutable) needs token, k, seq, v and sig")
    return query


def _decode_response(top: dict[bytes, bencode.Value], t: bytes) -> Response:
    values = top.get(b"r")
    if not isinstance(values, dict):
        raise KrpcError("response values are not a dictionary")
    node_id = _get_fixed(values, b"id", ID_LENGTH, required=True)
    assert node_id is not None
    nodes_raw = _get(values, b"nodes", bytes)
    peers_raw = values.get(b"values", [])
    if not isinstance(peers_raw, list) or not all(
        isinstance(p, bytes) and len(p) == 6 for p in peers_raw
    ):
        raise KrpcError("values is not a list of 6-byte compact peers")
    peers = tuple(
        (str(ipaddress.IPv4Address(p[:4])), int.from_bytes(p[4:], "big"))
        for p in peers_raw
        if isinstance(p, bytes)
    )
    seq = _get(values, b"seq", int)
    if seq is not None and seq < 0:
        raise KrpcError("negative seq")
    return Response(
        t=t,
        node_id=node_id,
        nodes=decode_nodes(nodes_raw) if nodes_raw is not None else (),
        token=_get(values, b"token", bytes),
        values=peers,
        k=_get_fixed(values, b"k", 32),
        seq=seq,
        v=_get(values, b"v", bytes),
        sig=_get_fixed(values, b"sig", 64),
    )


def _get(d: dict[bytes, bencode.Value], key: bytes, kind: type, *, required: bool = False):  # noqa: ANN202
    value = d.get(key)
    if value is None:
        if required:
            raise KrpcError(f"missing field {key.decode()}")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KrpcError(f"field {key.decode()} is not a {kind.__name__}")
    return value


def _get_fixed(
    d: dict[bytes, bencode.Value], key: bytes, length: int, *, required: bool = False
) -> bytes | None:
    value = _get(d, key, bytes, required=required)
    if value is not None and len(value) != length:
        raise KrpcError(f"field {key.decode()} is {len(value)} bytes, not {length}")
    return value


__all__ = [
    "BencodeError",
    "ErrorReply",
    "KrpcError",
    "Message",
    "NodeInfo",
    "Query",
    "Response",
    "decode",
    "decode_nodes",
    "encode",
    "encode_nodes",
]
