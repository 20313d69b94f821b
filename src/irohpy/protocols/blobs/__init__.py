"""iroh-blobs: content-addressed blobs, verified with BLAKE3 bao trees, over QUIC."""

from irohpy.protocols.blobs.bao import Leaf, Outboard, ResponseDecoder, compute_outboard, encode_ranges
from irohpy.protocols.blobs.ranges import ChunkRanges

__all__ = ["ChunkRanges", "Leaf", "Outboard", "ResponseDecoder", "compute_outboard", "encode_ranges"]
