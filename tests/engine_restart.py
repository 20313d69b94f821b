"""An engine that can 'crash' and come back on the same port, for stateless reset tests."""

from __future__ import annotations

from irohpy.endpoint.engine import QuicEngine
from irohpy.quic.endpoint import EndpointConfig, QuicEndpoint
from irohpy.socket.udp import UdpSocket


class Restartable:
    """An engine on a socket the test owns, so it can 'crash': the socket goes first and the
    engine's CONNECTION_CLOSE frames never leave, as if the process had died."""

    def __init__(self, engine: QuicEngine, sock: UdpSocket) -> None:
        self.engine = engine
        self.sock = sock

    @classmethod
    def start(cls, secret: bytes, config: EndpointConfig, port: int = 0) -> Restartable:
        holder: list[QuicEngine] = []
        sock = UdpSocket.bind("127.0.0.1", port, lambda batch, s: holder[0].receive(batch, s))
        engine = QuicEngine(QuicEndpoint(secret, config), sock.send_batch)
        holder.append(engine)
        return cls(engine, sock)

    async def crash(self) -> None:
        self.sock.close()
        await self.engine.close()
