"""The chat app: signed message codec, the gossip ticket, and two real processes chatting."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irohpy.base.addr import EndpointAddr, TransportAddr
from irohpy.base.keys import SecretKey
from irohpy.base.ticket import Ticket
from irohpy.cli.chat import ChatMessage, decode_chat, encode_chat, format_chat
from irohpy.errors import DecodeError, TicketError
from irohpy.protocols.gossip import GossipTicket, TopicId

LOCAL = ["--relay", "disabled", "--ipv4-addr", "127.0.0.1:0", "--ipv6-addr", "none"]


def test_signed_message_round_trip() -> None:
    secret = SecretKey.generate()
    msg = decode_chat(encode_chat(secret, "alice", "hi there", nonce=7))
    assert msg == ChatMessage(secret.public(), "alice", "hi there", 7, verified=True)
    assert format_chat(msg) == f"alice [{secret.public().fmt_short()}]: hi there"


def test_tampered_message_is_unverified() -> None:
    secret = SecretKey.generate()
    data = bytearray(encode_chat(secret, "alice", "pay bob 10", nonce=1))
    data[data.index(b"10")] = ord("9")
    msg = decode_chat(bytes(data))
    assert msg.text == "pay bob 90" and not msg.verified
    assert "(unverified)" in format_chat(msg)
    # claiming another author breaks the signature too
    other = SecretKey.generate().public()
    forged = other.to_bytes() + encode_chat(secret, "alice", "hi", nonce=1)[32:]
    assert not decode_chat(forged).verified


@pytest.mark.parametrize("data", [b"", bytes(10), bytes(32) + b"\x05abc", encode_chat(SecretKey.generate(), "a", "b") + b"x"])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_chat(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_chat_decoder_raises_only_decode_errors(data: bytes) -> None:
    try:
        decode_chat(data)
    except DecodeError:
        pass


def test_gossip_ticket_round_trip() -> None:
    addr = EndpointAddr(SecretKey.generate().public(), frozenset([TransportAddr.Ip("127.0.0.1", 4433)]))
    ticket = GossipTicket(TopicId.from_name("room"), (addr,))
    text = str(ticket)
    assert text.startswith("gossip")
    assert GossipTicket.parse(text) == ticket
    assert Ticket.parse_any(text) == ticket
    with pytest.raises(TicketError):
        GossipTicket.parse(text[:-4])


class Proc:
    """An ``irohpy chat`` process whose stdout lines we can wait for."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "irohpy", "chat", *args, *LOCAL],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buf = b""

    def readline(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no output line within {timeout} s; stderr so far unavailable"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, f"process exited: {self.proc.wait(5)} {self.proc.stderr.read().decode()}"  # type: ignore[union-attr]
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


def test_open_join_and_chat_both_ways() -> None:
    host = Proc("open", "alice")
    guest = None
    try:
        ticket = host.readline()
        assert GossipTicket.parse(ticket).bootstrap
        guest = Proc("join", ticket, "bob")
        # The joiner says hello once it has joined; resend until the host has a neighbor.
        deadline = time.monotonic() + 30
        line = ""
        while "hello alice" not in line:
            guest.say("hello alice")
            try:
                line = host.readline(timeout=2)
            except AssertionError:
                assert time.monotonic() < deadline, "host never got bob's message"
        assert line.startswith("bob [") and line.endswith("]: hello alice")
        host.say("hi bob")
        line = guest.readline()
        while "hi bob" not in line:
            line = guest.readline()
        assert line.startswith("alice [")
        assert "(unverified)" not in line
    finally:
        codes = [p.stop() for p in (guest, host) if p is not None]
    assert codes == [130] * len(codes)  # Ctrl-C: 128 + SIGINT
