"""BLAKE3 chaining values of chunks, chunk groups and parents, vectorised with numpy.

The ``blake3`` package only hashes whole inputs; bao needs the chaining values of
non-root subtrees and the parent compression, so the compression function lives
here, run over many independent lanes (chunks or parent pairs) at once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CHUNK_LEN = 1024
BLOCK_LEN = 64

CHUNK_START = 1
CHUNK_END = 2
PARENT = 4
ROOT = 8

U32 = npt.NDArray[np.uint32]

IV = np.array(
    [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19],
    dtype=np.uint32,
)
_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)


def _schedules() -> list[npt.NDArray[np.intp]]:
    """Per round, message word indices ordered as (column mx, column my, diagonal mx, diagonal my)."""
    order = list(range(16))
    rounds = []
    for _ in range(7):
        rounds.append(np.array(order[0:8:2] + order[1:8:2] + order[8:16:2] + order[9:16:2], dtype=np.intp))
        order = [order[i] for i in _PERMUTATION]
    return rounds


_SCHEDULES = _schedules()
_DIAG_B = np.array([1, 2, 3, 0], dtype=np.intp)
_DIAG_C = np.array([2, 3, 0, 1], dtype=np.intp)
_DIAG_D = np.array([3, 0, 1, 2], dtype=np.intp)
_UNDIAG_B = np.array([3, 0, 1, 2], dtype=np.intp)
_UNDIAG_D = np.array([1, 2, 3, 0], dtype=np.intp)


def _rotr(x: U32, n: int, tmp: U32) -> None:
    np.right_shift(x, n, out=tmp)
    np.left_shift(x, 32 - n, out=x)
    np.bitwise_or(x, tmp, out=x)


def _g(a: U32, b: U32, c: U32, d: U32, mx: U32, my: U32, tmp: U32) -> None:
    """The BLAKE3 G function on four columns (or diagonals) of every lane at once."""
    np.add(a, b, out=a)
    np.add(a, mx, out=a)
    np.bitwise_xor(d, a, out=d)
    _rotr(d, 16, tmp)
    np.add(c, d, out=c)
    np.bitwise_xor(b, c, out=b)
    _rotr(b, 12, tmp)
    np.add(a, b, out=a)
    np.add(a, my, out=a)
    np.bitwise_xor(d, a, out=d)
    _rotr(d, 8, tmp)
    np.add(c, d, out=c)
    np.bitwise_xor(b, c, out=b)
    _rotr(b, 7, tmp)


def compress(
    cv: U32,
    m: U32,
    counter: npt.NDArray[np.uint64] | int,
    block_len: npt.NDArray[np.uint32] | int,
    flags: npt.NDArray[np.uint32] | int,
) -> U32:
    """Compress one 64-byte block per lane: cv (8, N), m (16, N) -> new chaining values (8, N)."""
    n = cv.shape[1]
    counter64 = np.asarray(counter, dtype=np.uint64)
    a = np.array(cv[0:4], dtype=np.uint32)
    b = np.array(cv[4:8], dtype=np.uint32)
    c = np.empty((4, n), dtype=np.uint32)
    c[:] = IV[0:4, None]
    d = np.empty((4, n), dtype=np.uint32)
    d[0] = (counter64 & 0xFFFFFFFF).astype(np.uint32)
    d[1] = (counter64 >> np.uint64(32)).astype(np.uint32)
    d[2] = block_len
    d[3] = flags
    tmp = np.empty((4, n), dtype=np.uint32)
    mr = np.empty((16, n), dtype=np.uint32)
    for schedule in _SCHEDULES:
        np.take(m, schedule, axis=0, out=mr)
        _g(a, b, c, d, mr[0:4], mr[4:8], tmp)
        b = b[_DIAG_B]
        c = c[_DIAG_C]
        d = d[_DIAG_D]
        _g(a, b, c, d, mr[8:12], mr[12:16], tmp)
        b = b[_UNDIAG_B]
        c = c[_DIAG_C]
        d = d[_UNDIAG_D]
    out = np.empty((8, n), dtype=np.uint32)
    np.bitwise_xor(a, c, out=out[0:4])
    np.bitwise_xor(b, d, out=out[4:8])
    return out


def words(data: bytes | memoryview) -> U32:
    """Little-endian 32-bit words of data whose length is a multiple of 4."""
    return np.frombuffer(data, dtype="<u4").astype(np.uint32, copy=False)


def chunk_cvs(data: bytes | memoryview, first_chunk: int | npt.NDArray[np.uint64]) -> U32:
    """Chaining values (8, N) of N full, non-root 1 KiB chunks.

    The chunks are numbered from first_chunk on, or by first_chunk's N entries.
    """
    n = len(data) // CHUNK_LEN
    w = words(data).reshape(n, 16, 16)
    if isinstance(first_chunk, int):
        counters = np.arange(first_chunk, first_chunk + n, dtype=np.uint64)
    else:
        counters = first_chunk
    cv = np.empty((8, n), dtype=np.uint32)
    cv[:] = IV[:, None]
    for block in range(16):
        flags = (CHUNK_START if block == 0 else 0) | (CHUNK_END if block == 15 else 0)
        m = np.ascontiguousarray(w[:, block, :].T)
        cv = compress(cv, m, counters, BLOCK_LEN, flags)
    return cv


def parent_cvs(left: U32, right: U32, flags: npt.NDArray[np.uint32] | int = PARENT) -> U32:
    """Chaining values (8, N) of N parents with children left (8, N) and right (8, N)."""
    n = left.shape[1]
    key = np.empty((8, n), dtype=np.uint32)
    key[:] = IV[:, None]
    return compress(key, np.concatenate([left, right]), 0, BLOCK_LEN, flags)


def merge_pairs(cvs: U32, levels: int) -> U32:
    """Merge adjacent pairs of chaining values `levels` times (complete subtrees of 2**levels)."""
    for _ in range(levels):
        cvs = parent_cvs(cvs[:, 0::2], cvs[:, 1::2])
    return cvs


def last_chunk_cv(data: bytes | memoryview, chunk: int, is_root: bool) -> U32:
    """Chaining value (8, 1) of one chunk of at most 1 KiB (the root hash if is_root)."""
    nblocks = max(1, -(-len(data) // BLOCK_LEN))
    padded = bytes(data) + bytes(nblocks * BLOCK_LEN - len(data))
    w = words(padded).reshape(nblocks, 16)
    cv = IV[:, None].copy()
    for block in range(nblocks):
        last = block == nblocks - 1
        flags = (CHUNK_START if block == 0 else 0) | (CHUNK_END if last else 0) | (ROOT if last and is_root else 0)
        block_len = len(data) - block * BLOCK_LEN if last else BLOCK_LEN
        cv = compress(cv, w[block][:, None], chunk, block_len, flags)
    return cv


def subtree_cv(data: bytes | memoryview, first_chunk: int, is_root: bool = False) -> bytes:
    """Chaining value of the BLAKE3 subtree over data starting at chunk first_chunk."""
    full = len(data) // CHUNK_LEN
    if len(data) % CHUNK_LEN == 0 and full > 0:
        full -= 1
    parts: list[U32] = []
    if full:
        parts.append(chunk_cvs(memoryview(data)[: full * CHUNK_LEN], first_chunk))
    parts.append(last_chunk_cv(memoryview(data)[full * CHUNK_LEN :], first_chunk + full, is_root and full == 0))
    cvs = np.concatenate(parts, axis=1)
    return cv_bytes(tree_cv(cvs, is_root))


def tree_cv(cvs: U32, is_root: bool) -> U32:
    """Merge leaf chaining values (8, N) in BLAKE3 tree shape into one (8, 1)."""
    while cvs.shape[1] > 1:
        n = cvs.shape[1]
        pairs = n // 2
        flags = PARENT | ROOT if is_root and n == 2 else PARENT
        merged = parent_cvs(cvs[:, 0 : 2 * pairs : 2], cvs[:, 1 : 2 * pairs : 2], flags)
        cvs = merged if n % 2 == 0 else np.concatenate([merged, cvs[:, n - 1 :]], axis=1)
    return cvs


def cv_bytes(cv: U32) -> bytes:
    """One chaining value (8,) or (8, 1) as its 32 little-endian bytes."""
    return np.ascontiguousarray(cv.reshape(8), dtype="<u4").tobytes()


def cvs_from_bytes(data: bytes | memoryview) -> U32:
    """Chaining values (8, N) from N concatenated 32-byte values."""
    return np.ascontiguousarray(words(data).reshape(-1, 8).T)


def cvs_to_bytes(cvs: U32) -> bytes:
    """Chaining values (8, N) as N concatenated 32-byte values."""
    return np.ascontiguousarray(cvs.T, dtype="<u4").tobytes()
