"""iroh-blobs: content-addressed blobs, verified with BLAKE3 bao trees, over QUIC."""

from irohpy.protocols.blobs.bao import Leaf, Outboard, ResponseDecoder, compute_outboard, encode_ranges
from irohpy.protocols.blobs.ranges import ChunkRanges

__all__ = ["ChunkRanges", "Leaf", "Outboard", "ResponseDecoder", "compute_outboard", "encode_ranges"]

# Protocol, formats and transfer (proto).
from irohpy.protocols.blobs.collection import Collection
from irohpy.protocols.blobs.downloader import Downloader
from irohpy.protocols.blobs.hashseq import HashSeq
from irohpy.protocols.blobs.provider import BlobsProtocol, ProviderLimits
from irohpy.protocols.blobs.ticket import BlobFormat, BlobTicket
from irohpy.protocols.blobs.wire import ALPN, ChunkRangesSeq, GetManyRequest, GetRequest

__all__ += [
    "ALPN", "BlobFormat", "BlobTicket", "BlobsProtocol", "ChunkRangesSeq", "Collection", "Downloader",
    "GetManyRequest", "GetRequest", "HashSeq", "ProviderLimits",
]
