"""The sans-IO Mainline DHT core: bencode, KRPC parsing, routing table, lookup, BEP 44 storage."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.keys import SecretKey, Signature
from irohpy.errors import BencodeError, DhtError, IrohError, KrpcError
from irohpy.lookup.dht import bencode, krpc
from irohpy.lookup.dht.krpc import ErrorReply, NodeInfo, Query, Response
from irohpy.lookup.dht.lookup import IterativeLookup
from irohpy.lookup.dht.routing import RoutingTable, distance
from irohpy.lookup.dht.storage import MutableItem, MutableStore, TokenManager, mutable_target
from irohpy.lookup.signing import bep44_signable

BIGGEST = 10**64 - 1  # bencode integers here carry at most 64 digits, either sign
values = st.recursive(
    st.integers(min_value=-BIGGEST, max_value=BIGGEST) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4),
    max_leaves=20,
)


# -- bencode ------------------------------------------------------------------


def test_bencode_known_encodings() -> None:
    assert bencode.encode({b"b": 1, b"a": [b"x", -3]}) == b"d1:al1:xi-3ee1:bi1ee"
    assert bencode.decode(b"d1:al1:xi-3ee1:bi1ee") == {b"a": [b"x", -3], b"b": 1}
    assert bencode.encode(b"") == b"0:"
    assert bencode.decode(b"i0e") == 0


@pytest.mark.parametrize(
    "bad",
    [b"", b"i01e", b"i-0e", b"ie", b"i1", b"01:a", b"2:a", b"l", b"d1:b0:1:a0:e", b"d1:a0:1:a0:e",
     b"di1e0:e", b"i1ei2e", b"x", b"l" * 40 + b"e" * 40, b"i" + b"9" * 100 + b"e", b"d1:ae"],
)
def test_bencode_rejects_non_canonical(bad: bytes) -> None:
    with pytest.raises(BencodeError):
        bencode.decode(bad)


def test_bencode_size_limit_and_unencodable() -> None:
    with pytest.raises(BencodeError):
        bencode.decode(b"0:" + b" " * 10, max_size=5)
    for bad in ("text", True, 1.5, {"k": 1}, BIGGEST + 1, -BIGGEST - 1):
        with pytest.raises(BencodeError):
            bencode.encode(bad)  # type: ignore[arg-type]
    for edge in (BIGGEST, -BIGGEST):  # the longest integers, both signs, round-trip
        assert bencode.decode(bencode.encode(edge)) == edge
    with pytest.raises(BencodeError):
        bencode.decode(b"i-%de" % (BIGGEST + 1))


@given(values)
def test_bencode_round_trip(value: bencode.Value) -> None:
    assert bencode.decode(bencode.encode(value)) == value


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_bencode_garbage_raises_only_iroh_errors(data: bytes) -> None:
    try:
        bencode.decode(data)
    except IrohError:
        pass


# -- KRPC ---------------------------------------------------------------------


NODE = NodeInfo(b"\x01" * 20, "127.0.0.1", 6881)


@pytest.mark.parametrize(
    "message",
    [
        Query(b"aa", "ping", b"\x02" * 20),
        Query(b"ab", "find_node", b"\x02" * 20, target=b"\x03" * 20),
        Query(b"ac", "get_peers", b"\x02" * 20, target=b"\x03" * 20),
        Query(b"ad", "announce_peer", b"\x02" * 20, target=b"\x03" * 20, token=b"tk", port=1,
              implied_port=True),
        Query(b"ae", "get", b"\x02" * 20, target=b"\x03" * 20, seq=4),
        Query(b"af", "put", b"\x02" * 20, token=b"t", k=b"\x04" * 32, seq=1, v=b"v", sig=b"\x05" * 64,
              cas=0),
        Response(b"ba", b"\x02" * 20, nodes=(NODE,), token=b"tk", values=(("10.0.0.1", 80),)),
        Response(b"bb", b"\x02" * 20, k=b"\x04" * 32, seq=9, v=b"dns", sig=b"\x05" * 64),
        ErrorReply(b"ca", 206, "invalid signature"),
    ],
)
def test_krpc_round_trip(message: krpc.Message) -> None:
    assert krpc.decode(krpc.encode(message)) == message


def test_krpc_bep5_example_ping() -> None:
    raw = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    assert krpc.decode(raw) == Query(b"aa", "ping", b"abcdefghij0123456789")
    assert krpc.encode(krpc.decode(raw)) == raw


@pytest.mark.parametrize(
    "bad",
    [
        {b"t": b"aa", b"y": b"x"},
        {b"t": b"", b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x00" * 20}},
        {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": b"short"}},
        {b"t": b"aa", b"y": b"q", b"q": b"find_node", b"a": {b"id": b"\x00" * 20}},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": b"\x00" * 20, b"nodes": b"\x00" * 25}},
        {b"t": b"aa", b"y": b"e", b"e": [b"x", 1]},
        {b"t": b"aa", b"y": b"q", b"q": b"put", b"a": {b"id": b"\x00" * 20, b"token": b"t"}},
        [b"not a dict"],
    ],
)
def test_krpc_rejects_malformed(bad: bencode.Value) -> None:
    with pytest.raises(KrpcError):
        krpc.decode(bencode.encode(bad))


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_krpc_garbage_raises_only_iroh_errors(data: bytes) -> None:
    try:
        krpc.decode(data)
    except IrohError:
        pass


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e"]), values, max_size=6))
def test_krpc_structured_garbage_raises_only_iroh_errors(msg: dict[bytes, bencode.Value]) -> None:
    try:
        krpc.decode(bencode.encode(msg))
    except IrohError:
        pass


def test_compact_nodes() -> None:
    raw = krpc.encode_nodes([NODE])
    assert len(raw) == 26
    assert krpc.decode_nodes(raw) == (NODE,)
    assert krpc.decode_nodes(b"\x01" * 24 + b"\x00\x00") == ()  # port 0 is unusable


# -- routing table ------------------------------------------------------------


def _node(i: int, prefix: bytes = b"") -> NodeInfo:
    node_id = (prefix + i.to_bytes(20, "big"))[-20:] if prefix else i.to_bytes(20, "big")
    return NodeInfo(node_id, "127.0.0.1", 1000 + i % 60000)


def test_routing_bucket_capacity_and_replacement() -> None:
    table = RoutingTable(b"\x00" * 20, k=8)
    far = [NodeInfo(b"\x80" + i.to_bytes(19, "big"), "127.0.0.1", 2000 + i) for i in range(10)]
    added = [table.add(n, 0.0) for n in far]
    assert added == [True] * 8 + [False] * 2
    assert len(table) == 8
    table.mark_failed(far[0].node_id)
    assert not table.add(far[8], 1.0)
    table.mark_failed(far[0].node_id)
    assert table.add(far[8], 1.0)
    assert far[0].node_id not in table and far[8].node_id in table


def test_routing_closest_and_self() -> None:
    own = b"\x00" * 20
    table = RoutingTable(own)
    assert not table.add(NodeInfo(own, "127.0.0.1", 1), 0.0)
    for i in range(1, 50):
        table.add(_node(i), 0.0)
    target = (7).to_bytes(20, "big")
    closest = table.closest(target, 4)
    assert closest[0].node_id == target
    dists = [distance(n.node_id, target) for n in closest]
    assert dists == sorted(dists)
    table.remove(target)
    assert target not in table


# -- iterative lookup ---------------------------------------------------------


def test_lookup_converges_on_a_simulated_network() -> None:
    nodes = [NodeInfo(hashlib.sha1(b"%d" % i).digest(), "127.0.0.1", 3000 + i) for i in range(200)]
    tables = {}
    for n in nodes:
        table = RoutingTable(n.node_id)
        for other in nodes:
            table.add(other, 0.0)
        tables[n.node_id] = table
    target = hashlib.sha1(b"target").digest()
    lookup = IterativeLookup(target, nodes[:1], k=8, alpha=3)
    now, rounds = 0.0, 0
    while not lookup.done:
        batch = lookup.next_queries(now)
        assert 0 < len(batch) <= 3
        for n in batch:
            lookup.on_response(n.node_id, tables[n.node_id].closest(target), token=b"t")
        rounds += 1
        assert rounds < 100
    expected = sorted(nodes, key=lambda n: distance(n.node_id, target))[:8]
    assert lookup.closest_responded() == expected
    assert set(lookup.tokens) >= {n.node_id for n in expected}


def test_lookup_times_out_silent_nodes() -> None:
    silent = NodeInfo(b"\x01" * 20, "127.0.0.1", 1)
    lookup = IterativeLookup(b"\x00" * 20, [silent], timeout=1.0)
    assert lookup.next_queries(0.0) == [silent]
    assert lookup.next_deadline() == 1.0
    assert not lookup.done
    assert lookup.next_queries(1.5) == []
    assert lookup.done and lookup.closest_responded() == []


def test_lookup_keeps_the_newest_item() -> None:
    key = SecretKey.generate()
    a, b = (NodeInfo(bytes([i]) * 20, "127.0.0.1", i) for i in (1, 2))
    lookup = IterativeLookup(b"\x00" * 20, [a, b])
    lookup.next_queries(0.0)
    lookup.on_response(a.node_id, [], item=MutableItem.sign(key, 5, b"new"))
    lookup.on_response(b.node_id, [], item=MutableItem.sign(key, 3, b"old"))
    assert lookup.best_item is not None and lookup.best_item.value == b"new"


# -- BEP 44 storage -----------------------------------------------------------


def test_bep44_target_and_signable() -> None:
    key = SecretKey.generate()
    item = MutableItem.sign(key, 42, b"dns")
    assert item.target == hashlib.sha1(key.public().to_bytes()).digest() == mutable_target(key.public())
    key.public().verify(b"3:seqi42e1:v3:dns", item.signature)
    assert bep44_signable(42, b"dns") == b"3:seqi42e1:v3:dns"


def test_bep44_store_rules() -> None:
    key = SecretKey.generate()
    store = MutableStore(lifetime=100.0)
    first = MutableItem.sign(key, 10, b"a")
    store.put(first, 0.0)
    store.put(first, 1.0)  # same seq and value: a refresh
    with pytest.raises(DhtError) as lower:
        store.put(MutableItem.sign(key, 9, b"b"), 2.0)
    assert lower.value.code == 302
    with pytest.raises(DhtError) as same_seq:
        store.put(MutableItem.sign(key, 10, b"b"), 2.0)
    assert same_seq.value.code == 302
    with pytest.raises(DhtError) as cas:
        store.put(MutableItem.sign(key, 11, b"c"), 2.0, cas=3)
    assert cas.value.code == 301
    store.put(MutableItem.sign(key, 11, b"c"), 3.0, cas=10)
    assert store.get(first.target, 3.0) == MutableItem.sign(key, 11, b"c")
    assert store.get(first.target, 200.0) is None


def test_bep44_rejects_bad_signature_and_big_value() -> None:
    key, other = SecretKey.generate(), SecretKey.generate()
    store = MutableStore()
    forged = MutableItem(key.public(), 1, b"x", other.sign(bep44_signable(1, b"x")))
    with pytest.raises(DhtError) as bad:
        store.put(forged, 0.0)
    assert bad.value.code == 206
    tampered = MutableItem(key.public(), 2, b"x", key.sign(bep44_signable(1, b"x")))
    with pytest.raises(DhtError):
        store.put(tampered, 0.0)
    store.put(MutableItem.sign(key, 1, b"x" * 1000), 0.0)
    with pytest.raises(DhtError) as big:
        store.put(MutableItem.sign(key, 2, b"x" * 1001), 0.0)
    assert big.value.code == 205
    with pytest.raises(DhtError) as junk:
        MutableItem.from_wire(b"\x00" * 32, 1, b"x", b"\x00" * 64)
    assert junk.value.code == 206
    assert len(store) == 1
    assert isinstance(forged.signature, Signature)


def test_tokens_bound_to_ip_and_rotate() -> None:
    tokens = TokenManager(0.0, rotation=10.0)
    token = tokens.issue("10.0.0.1", 0.0)
    assert tokens.valid(token, "10.0.0.1", 5.0)
    assert not tokens.valid(token, "10.0.0.2", 5.0)
    assert tokens.valid(token, "10.0.0.1", 12.0)  # previous secret still accepted
    assert not tokens.valid(token, "10.0.0.1", 25.0)


_FIELDS = [b"target", b"info_hash", b"token", b"port", b"implied_port", b"k", b"seq", b"v", b"sig",
           b"cas", b"salt", b"nodes", b"values"]
_field_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.binary(max_size=70),
    st.sampled_from([b"\x00" * 20, b"\x00" * 32, b"\x00" * 64, b"\x00" * 26]),
    st.lists(st.binary(max_size=8), max_size=3),
)


@settings(max_examples=500)
@given(
    st.sampled_from([b"q", b"r"]),
    st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put", b"x"]),
    st.dictionaries(st.sampled_from(_FIELDS), _field_values, max_size=8),
)
def test_krpc_fuzzed_fields_raise_only_iroh_errors(
    kind: bytes, method: bytes, fields: dict[bytes, bencode.Value]
) -> None:
    body = {b"id": b"\x07" * 20, **fields}
    msg = {b"t": b"tt", b"y": kind, b"q": method, (b"a" if kind == b"q" else b"r"): body}
    try:
        decoded = krpc.decode(bencode.encode(msg))
    except IrohError:
        return
    assert krpc.decode(krpc.encode(decoded)) == decoded
