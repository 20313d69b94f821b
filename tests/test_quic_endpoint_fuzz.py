"""Hypothesis against the endpoint's receive path: random datagrams, random packets, mutated
Initials. Nothing escapes, junk allocates no connection, and an established connection lives on."""

from __future__ import annotations


from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irohpy.quic.endpoint import QuicEndpoint
from irohpy.quic.packet import build_long_header, build_short_header, split_datagram
from tests.quic_endpoint_sim import ALPN
from tests.test_quic_endpoint import A, B, ID_B, SECRET_A, SECRET_B, handshaken, server_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CLIENT = QuicEndpoint(SECRET_A)
CLIENT.connect(B, ID_B, [ALPN], 0.0)
FIRST_INITIAL = CLIENT.transmits(0.0)[0].datagrams[0]
FIRST_END = split_datagram(FIRST_INITIAL, 8)[0].end

headers = st.one_of(
    st.builds(
        lambda t, d, s, tok, v, n: build_long_header(t, d, s, 0, 1, n, token=tok, version=v),
        st.sampled_from([0, 1, 2]),
        st.binary(min_size=0, max_size=20),
        st.binary(min_size=0, max_size=20),
        st.binary(max_size=40),
        st.sampled_from([1, 0, 2, 0xFF00001D, 0x1A2A3A4A]),
        st.integers(0, 1500),
    ),
    st.builds(lambda d: build_short_header(d, 0, 1), st.binary(min_size=8, max_size=8)),
)
datagrams = st.one_of(
    st.binary(max_size=1500),
    st.builds(lambda h, body, pad: (h + body).ljust(pad, b"\x00"), headers, st.binary(max_size=300),
              st.sampled_from([0, 1200, 1350])),
)


@FUZZ
@given(batch=st.lists(datagrams, max_size=8))
def test_random_datagrams_allocate_nothing(batch: list[bytes]) -> None:
    ep = QuicEndpoint(SECRET_B, server_config())
    created = ep.receive([(d, A) for d in batch], 1.0)
    out = ep.transmits(1.0)
    assert created == [] and ep.connections == [] and ep.routes() == {}
    assert ep.handshakes_under_way == 0 and ep.deadline() is None
    for t in out:
        for d in t.datagrams:
            assert len(d) < max(len(x) for x in batch)


@FUZZ
@given(data=st.data())
def test_mutated_initials_allocate_nothing(data: st.DataObject) -> None:
    mutated = bytearray(FIRST_INITIAL)
    for pos in data.draw(st.sets(st.integers(0, FIRST_END - 1), min_size=1, max_size=4)):
        mutated[pos] ^= data.draw(st.integers(1, 255))
    ep = QuicEndpoint(SECRET_B, server_config())
    assert ep.receive([(bytes(mutated), A)], 0.0) == []
    assert ep.connections == [] and ep.routes() == {}
    assert ep.stats.connections == 0


ESTABLISHED = handshaken()


@FUZZ
@given(batch=st.lists(datagrams, min_size=1, max_size=8), routed=st.booleans())
def test_junk_towards_a_live_connection_does_not_hurt_it(batch: list[bytes], routed: bool) -> None:
    sim, client_ep, server_ep, client, server = ESTABLISHED
    if routed:
        cid = server.host_cids[0]
        batch = [bytes([0x40 | (d[0] & 0x3F) if d else 0x40]) + cid + d[9:] for d in batch]
    before = len(server_ep.connections)
    server_ep.receive([(d, A) for d in batch], sim.now)
    server_ep.transmits(sim.now)
    assert len(server_ep.connections) == before and not server.is_closed
