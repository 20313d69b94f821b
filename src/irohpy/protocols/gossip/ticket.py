"""GossipTicket: a topic id and the peers to join it through, as one ``gossip…`` string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from irohpy.base.addr import EndpointAddr
from irohpy.base.postcard import Reader, Writer
from irohpy.base.ticket import Ticket
from irohpy.protocols.gossip.net import TopicId
from irohpy.protocols.gossip.wire import TOPIC_ID_LENGTH


@dataclass(frozen=True)
class GossipTicket(Ticket):
    """postcard ``{topic: [u8; 32], bootstrap: Vec<EndpointAddr>}``, like iroh's chat example."""

    KIND: ClassVar[str] = "gossip"

    topic: TopicId
    bootstrap: tuple[EndpointAddr, ...]

    def to_bytes(self) -> bytes:
        w = Writer().fixed(self.topic.to_bytes(), TOPIC_ID_LENGTH)
        w.seq(self.bootstrap, lambda addr: addr.encode_postcard(w))
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        r = Reader(data)
        topic = TopicId.from_bytes(r.fixed(TOPIC_ID_LENGTH))
        bootstrap = tuple(r.seq(lambda: EndpointAddr.decode_postcard(r)))
        r.finish()
        return cls(topic, bootstrap)
