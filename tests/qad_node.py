"""An endpoint that reports what QUIC address discovery taught it, run inside a lab namespace.

``python -m tests.qad_node irohpy --relay URL --quic-port P --ca PEM --seconds S`` binds our
Endpoint on ``0.0.0.0:0`` and prints JSON lines: ``bound`` (its port), then ``qad`` with the
reflexive addresses each time they change. ``rust`` instead binds the official ``iroh`` package
with the relay (QAD at ``--quic-port``) and prints its ``addr`` after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


async def run_irohpy(args: argparse.Namespace) -> None:
    from irohpy import presets  # noqa: PLC0415
    from irohpy.base.relay_url import RelayUrl  # noqa: PLC0415
    from irohpy.endpoint.endpoint import Endpoint  # noqa: PLC0415
    from irohpy.relay.map import RelayConfig, RelayMode  # noqa: PLC0415
    from irohpy.tls.webpki import CaTlsConfig  # noqa: PLC0415

    mode = RelayMode.custom([RelayConfig(RelayUrl.parse(args.relay), quic_port=args.quic_port)])
    ca = CaTlsConfig.custom_roots([Path(args.ca).read_bytes()])
    started = asyncio.get_running_loop().time()
    ep = await Endpoint.bind(preset=presets.MINIMAL, relay_mode=mode, bind_addrs=["0.0.0.0:0"], ca_tls_config=ca)
    try:
        emit(event="bound", port=ep.bound_sockets()[0][1])
        direct = ep._direct
        assert direct is not None
        seen: set[tuple[str, int]] = set()
        loop = asyncio.get_running_loop()
        end = loop.time() + args.seconds
        while loop.time() < end:
            if direct.qad != seen:
                seen = set(direct.qad)
                advertised = sorted(str(a) for a in ep.addr().addrs)
                emit(event="qad", addrs=sorted(f"{h}:{p}" for h, p in seen), advertised=advertised,
                     seconds=round(loop.time() - started, 3))
            await asyncio.sleep(0.05)
    finally:
        await ep.close()
    emit(event="done")


async def run_rust(args: argparse.Namespace) -> None:
    import iroh  # noqa: PLC0415

    iroh.iroh_ffi.uniffi_set_event_loop(asyncio.get_running_loop())
    relays = iroh.RelayMap.empty()
    relays.insert(iroh.RelayConfig(url=args.relay, quic_port=args.quic_port, auth_token=None))
    ep = await iroh.Endpoint.bind(iroh.EndpointOptions(
        preset=iroh.preset_minimal(), relay_mode=iroh.RelayMode.custom(relays), bind_addr="0.0.0.0:0"))
    try:
        emit(event="bound", sockets=ep.bound_sockets())
        await asyncio.sleep(args.seconds)
        addr = ep.addr()
        emit(event="addr", direct=[str(a) for a in addr.direct_addresses()] if hasattr(addr, "direct_addresses")
             else str(addr))
    finally:
        await ep.close()
    emit(event="done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["irohpy", "rust"])
    parser.add_argument("--relay", required=True)
    parser.add_argument("--quic-port", type=int, required=True)
    parser.add_argument("--ca", default="")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run_irohpy(args) if args.kind == "irohpy" else run_rust(args))


if __name__ == "__main__":
    main()
