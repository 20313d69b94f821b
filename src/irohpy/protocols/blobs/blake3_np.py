"""BLAKE3 chaining values of chunks, chunk groups and parents, vectorised with numpy.

The ``blake3`` package only hashes whole inputs; bao needs the chaining values of
non-root subtrees and the parent compression, so the compression function lives
here, run over many independent lanes (chunks or parent pairs) at once.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

CHUNK_LEN = 1024
BLOCK_LEN = 64

CHUNK_START = 1
CHUNK_END = 2
PARENT = 4
ROOT = 8

THREADS = os.cpu_count() or 1
"""Most threads one batch of chunks is split across."""
SCALAR_LANES = 3
"""Lanes up to which plain Python beats numpy's per-call overhead."""
MIN_TASK_LANES = 2048
"""Lanes (chunks) below which a thread's share costs more in per-call overhead than it saves."""
_TRANSPOSE_LANES = 512
"""Chunks transposed at once into word-major order: small enough to stay in cache."""

U32 = npt.NDArray[np.uint32]

IV = np.array(
    [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19],
    dtype=np.uint32,
)
_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)


def _schedules() -> list[list[int]]:
    """Message word order of each of the 7 rounds."""
    order = list(range(16))
    rounds = []
    for _ in range(7):
        rounds.append(order)
        order = [order[i] for i in _PERMUTATION]
    return rounds


_SCHEDULES = [(s[0:8:2], s[1:8:2], s[8:16:2], s[9:16:2]) for s in _schedules()]
"""Per round, the message words added in the column step (x, y) and the diagonal step (x, y)."""

# The diagonal step G(v0,v5,v10,v15) G(v1,v6,v11,v12) G(v2,v7,v8,v13) G(v3,v4,v9,v14) done
# on contiguous runs of state rows: (destination rows, source rows) pairs per operation.
_DIAG_A_PLUS_B = ((slice(0, 3), slice(5, 8)), (slice(3, 4), slice(4, 5)))
_DIAG_D_XOR_A = ((slice(15, 16), slice(0, 1)), (slice(12, 15), slice(1, 4)))
_DIAG_C_PLUS_D = ((slice(10, 11), slice(15, 16)), (slice(11, 12), slice(12, 13)), (slice(8, 10), slice(13, 15)))
_DIAG_B_XOR_C = ((slice(5, 7), slice(10, 12)), (slice(7, 8), slice(8, 9)), (slice(4, 5), slice(9, 10)))


def compress(
    cv: U32,
    m: U32,
    counter: npt.NDArray[np.uint64] | int,
    block_len: npt.NDArray[np.uint32] | int,
    flags: npt.NDArray[np.uint32] | int,
) -> U32:
    """Compress one 64-byte block per lane: cv (8, N), m (16, N) -> new chaining values (8, N).

    Each state word is one contiguous row over all lanes; the column step works on
    four rows per numpy call and the diagonal step on the contiguous runs of its
    rows; message words are added row by row (a gather would copy them).
    """
    n = cv.shape[1]
    if n <= SCALAR_LANES:
        return _compress_lanes(cv, m, counter, block_len, flags)
    counter64 = np.asarray(counter, dtype=np.uint64)
    v = np.empty((16, n), dtype=np.uint32)
    v[0:8] = cv
    v[8:12] = IV[0:4, None]
    v[12] = counter64 & np.uint64(0xFFFFFFFF)
    v[13] = counter64 >> np.uint64(32)
    v[14] = block_len
    v[15] = flags
    a, b, c, d = v[0:4], v[4:8], v[8:12], v[12:16]
    t = np.empty((4, n), dtype=np.uint32)
    add, xor, shr, shl, orr = np.add, np.bitwise_xor, np.right_shift, np.left_shift, np.bitwise_or

    def rotr(x: U32, bits: int) -> None:
        shr(x, bits, out=t)
        shl(x, 32 - bits, out=x)
        orr(x, t, out=x)

    a_plus_b, d_xor_a, c_plus_d, b_xor_c = (
        [(v[dst], v[src]) for dst, src in runs]
        for runs in (_DIAG_A_PLUS_B, _DIAG_D_XOR_A, _DIAG_C_PLUS_D, _DIAG_B_XOR_C)
    )

    def pairs(op: np.ufunc, runs: list[tuple[U32, U32]]) -> None:
        for dst, src in runs:
            op(dst, src, out=dst)

    rows = list(m)
    arows = list(v[0:4])

    def add_msg(words: list[int]) -> None:
        for row, word in zip(arows, words):
            add(row, rows[word], out=row)

    for col_x, col_y, diag_x, diag_y in _SCHEDULES:
        add(a, b, out=a)
        add_msg(col_x)
        xor(d, a, out=d)
        rotr(d, 16)
        add(c, d, out=c)
        xor(b, c, out=b)
        rotr(b, 12)
        add(a, b, out=a)
        add_msg(col_y)
        xor(d, a, out=d)
        rotr(d, 8)
        add(c, d, out=c)
        xor(b, c, out=b)
        rotr(b, 7)
        pairs(add, a_plus_b)
        add_msg(diag_x)
        pairs(xor, d_xor_a)
        rotr(d, 16)
        pairs(add, c_plus_d)
        pairs(xor, b_xor_c)
        rotr(b, 12)
        pairs(add, a_plus_b)
        add_msg(diag_y)
        pairs(xor, d_xor_a)
        rotr(d, 8)
        pairs(add, c_plus_d)
        pairs(xor, b_xor_c)
        rotr(b, 7)
    xor(v[0:8], v[8:16], out=v[0:8])
    return v[0:8]


_COLUMNS_THEN_DIAGONALS = (
    (0, 4, 8, 12),
    (1, 5, 9, 13),
    (2, 6, 10, 14),
    (3, 7, 11, 15),
    (0, 5, 10, 15),
    (1, 6, 11, 12),
    (2, 7, 8, 13),
    (3, 4, 9, 14),
)
_ROUND_WORDS = [
    [(a, b, c, d, s[2 * i], s[2 * i + 1]) for i, (a, b, c, d) in enumerate(_COLUMNS_THEN_DIAGONALS)]
    for s in _schedules()
]
_IV_LIST = [int(x) for x in IV]


def _compress_lanes(
    cv: U32,
    m: U32,
    counter: npt.NDArray[np.uint64] | int,
    block_len: npt.NDArray[np.uint32] | int,
    flags: npt.NDArray[np.uint32] | int,
) -> U32:
    """:func:`compress` lane by lane in plain Python: faster than numpy for a few lanes."""
    n = cv.shape[1]
    counters, lens, flag_list = (np.broadcast_to(np.asarray(x), (n,)).tolist() for x in (counter, block_len, flags))
    out = np.empty((8, n), dtype=np.uint32)
    for lane, (h, w) in enumerate(zip(cv.T.tolist(), m.T.tolist())):
        ctr = counters[lane]
        out[:, lane] = _compress_one(h, w, ctr & 0xFFFFFFFF, ctr >> 32, lens[lane], flag_list[lane])
    return out


def _compress_one(h: list[int], m: list[int], t0: int, t1: int, block_len: int, flags: int) -> list[int]:
    v = h + _IV_LIST[0:4] + [t0, t1, block_len, flags]
    mask = 0xFFFFFFFF
    for round_words in _ROUND_WORDS:
        for a, b, c, d, x, y in round_words:
            va = (v[a] + v[b] + m[x]) & mask
            vd = v[d] ^ va
            vd = (vd >> 16) | ((vd << 16) & mask)
            vc = (v[c] + vd) & mask
            vb = v[b] ^ vc
            vb = (vb >> 12) | ((vb << 20) & mask)
            va = (va + vb + m[y]) & mask
            vd ^= va
            vd = (vd >> 8) | ((vd << 24) & mask)
            vc = (vc + vd) & mask
            vb ^= vc
            v[a], v[b], v[c], v[d] = va, (vb >> 7) | ((vb << 25) & mask), vc, vd
    return [v[i] ^ v[i + 8] for i in range(8)]


def words(data: bytes | memoryview) -> U32:
    """Little-endian 32-bit words of data whose length is a multiple of 4."""
    return np.frombuffer(data, dtype="<u4").astype(np.uint32, copy=False)


def chunk_cvs(
    data: bytes | memoryview, first_chunk: int | npt.NDArray[np.uint64], threads: int | None = None
) -> U32:
    """Chaining values (8, N) of N full, non-root 1 KiB chunks.

    The chunks are numbered from first_chunk on, or by first_chunk's N entries.
    Large batches are split across `threads` threads (numpy releases the GIL in
    its loops); by default as many as there are idle CPUs.
    """
    n = len(data) // CHUNK_LEN
    if isinstance(first_chunk, int):
        counters = np.arange(first_chunk, first_chunk + n, dtype=np.uint64)
    else:
        counters = first_chunk
    w = words(data).reshape(n, 256)
    tasks = min(_idle_cpus() if threads is None else threads, n // MIN_TASK_LANES)
    if tasks < 2:
        return _chunk_cvs(w, counters)
    bounds = [n * i // tasks for i in range(tasks + 1)]
    with ThreadPoolExecutor(max_workers=tasks) as pool:
        parts = pool.map(lambda i: _chunk_cvs(w[bounds[i] : bounds[i + 1]], counters[bounds[i] : bounds[i + 1]]), range(tasks))
        return np.concatenate(list(parts), axis=1)


def _idle_cpus() -> int:
    """CPUs worth a thread now: threads only help while cores are idle, else they fight over the GIL."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(THREADS, int(THREADS - load + 0.5)))


def _chunk_cvs(w: U32, counters: npt.NDArray[np.uint64]) -> U32:
    n = w.shape[0]
    m = np.empty((256, n), dtype=np.uint32)
    for i in range(0, n, _TRANSPOSE_LANES):
        m[:, i : i + _TRANSPOSE_LANES] = w[i : i + _TRANSPOSE_LANES].T
    cv = np.empty((8, n), dtype=np.uint32)
    cv[:] = IV[:, None]
    for block in range(16):
        flags = (CHUNK_START if block == 0 else 0) | (CHUNK_END if block == 15 else 0)
        cv = compress(cv, m[16 * block : 16 * block + 16], counters, BLOCK_LEN, flags)
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


def leaf_cvs(data: bytes | memoryview, first_chunk: int) -> U32:
    """Non-root chaining values (8, N) of every chunk of data; the last may be short, empty data is one empty chunk."""
    view = memoryview(data)
    full = len(view) // CHUNK_LEN
    parts: list[U32] = []
    if full:
        parts.append(chunk_cvs(view[: full * CHUNK_LEN], first_chunk))
    if len(view) % CHUNK_LEN or not full:
        parts.append(last_chunk_cv(view[full * CHUNK_LEN :], first_chunk + full, False))
    return np.concatenate(parts, axis=1)


def subtree_cv(data: bytes | memoryview, first_chunk: int, is_root: bool = False) -> bytes:
    """Chaining value of the BLAKE3 subtree over data starting at chunk first_chunk (the hash if is_root)."""
    if len(data) <= CHUNK_LEN:
        return cv_bytes(last_chunk_cv(data, first_chunk, is_root))
    return cv_bytes(tree_cv(leaf_cvs(data, first_chunk), is_root))


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
