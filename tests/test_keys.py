"""Keys, ids, signatures and key files (irohpy.base.keys), against iroh-wire.md §1."""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from irohpy import EndpointId, PublicKey, SecretKey, Signature
from irohpy.base.keys import decode_base32, decode_z32, encode_base32, encode_z32
from irohpy.errors import DecodeError, InvalidKey, InvalidSignature, IrohError, KeyFileError

# iroh-wire.md §1.2
SEED_2A = bytes([0x2A]) * 32
SEED_00 = bytes(32)
PUB_2A = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
PUB_2A_B32 = "df7wwi7bnsctfrvlza4pvtk6u6e34ddwwkjagnadtp5iwpjwrvqq"
PUB_2A_Z32 = "df9sse9bp1nuftim3yhxiuk6w6r5hddsskjygpydux7esxjstioo"
PUB_00 = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
PUB_00_B32 = "hnvcppgow2sc2yvdvdicu3ynonsteflxdxrehjr2ybekdc2z3iuq"
PUB_00_Z32 = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
ORDER_8_Y = 0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826


def _encode_point(y: int, x_negative: bool) -> bytes:
    return (y | (int(x_negative) << 255)).to_bytes(32, "little")


# The eight small-order points: identity, order 2, two of order 4, four of order 8.
SMALL_ORDER = [
    _encode_point(1, False),
    _encode_point(P - 1, False),
    _encode_point(0, False),
    _encode_point(0, True),
    _encode_point(ORDER_8_Y, False),
    _encode_point(ORDER_8_Y, True),
    _encode_point(P - ORDER_8_Y, False),
    _encode_point(P - ORDER_8_Y, True),
]


# -- test vectors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "hex_", "b32", "z32"),
    [(SEED_2A, PUB_2A, PUB_2A_B32, PUB_2A_Z32), (SEED_00, PUB_00, PUB_00_B32, PUB_00_Z32)],
)
def test_spec_vectors(seed: bytes, hex_: str, b32: str, z32: str) -> None:
    public = SecretKey.from_bytes(seed).public()
    assert str(public) == hex_
    assert public.to_base32() == b32
    assert public.to_z32() == z32
    assert public.fmt_short() == hex_[:10]
    assert bytes(public) == public.to_bytes() == public.as_bytes == bytes.fromhex(hex_)
    assert repr(public) == f"PublicKey({hex_})"
    assert PublicKey.parse(hex_) == public
    assert PublicKey.parse(b32) == public
    assert PublicKey.parse(b32.upper()) == public
    assert PublicKey.from_z32(z32) == public
    assert EndpointId is PublicKey


def test_uppercase_hex_is_rejected_like_rust() -> None:
    with pytest.raises(InvalidKey, match="lowercase"):
        PublicKey.parse(PUB_2A.upper())
    with pytest.raises(InvalidKey):
        PublicKey.parse(PUB_2A[:10].upper() + PUB_2A[10:])


@pytest.mark.parametrize(
    "text",
    [
        "",
        PUB_2A[:-1],
        PUB_2A + "0",
        PUB_2A_B32[:-1],
        PUB_2A_B32 + "a",
        PUB_2A_B32[:-1] + "r",  # non-zero trailing bits: data-encoding refuses them
        PUB_2A_B32[:-1] + "1",  # not in the alphabet
        " " + PUB_2A[1:],
        PUB_2A[:-2] + "0x",
        PUB_2A[:-1] + "\u0661",  # an Arabic-Indic digit: 64 characters, not hex
        "\u00df" * 26,  # "ß".upper() is "SS": must not turn 26 characters into 52
    ],
)
def test_bad_key_text(text: str) -> None:
    with pytest.raises(InvalidKey):
        PublicKey.parse(text)


def test_parse_needs_str() -> None:
    with pytest.raises(InvalidKey):
        PublicKey.parse(bytes.fromhex(PUB_2A))  # type: ignore[arg-type]


# -- curve point validation ---------------------------------------------------


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=[f"small{i}" for i in range(8)])
def test_small_order_keys_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidKey, match="small-order"):
        PublicKey.from_bytes(raw)


def test_non_canonical_encodings_are_rejected() -> None:
    # y in [p, 2^255) is y - p written the long way; dalek would reduce it, we refuse it.
    for y in range(P, 2**255):
        with pytest.raises(InvalidKey):
            PublicKey.from_bytes(_encode_point(y, False))


def test_off_curve_bytes_are_rejected() -> None:
    # Find bytes that are not a point: about half of all y values are not.
    rejected = 0
    for i in range(64):
        raw = hashlib.sha256(b"off-curve-%d" % i).digest()
        try:
            PublicKey.from_bytes(raw)
        except InvalidKey as exc:
            assert "not a point" in str(exc) or "canonical" in str(exc)
            rejected += 1
    assert 10 < rejected < 54


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x01" * 33, "ab" * 32, None, 42])
def test_from_bytes_wrong_length_or_type(bad: object) -> None:
    with pytest.raises(InvalidKey):
        PublicKey.from_bytes(bad)  # type: ignore[arg-type]


# -- values -------------------------------------------------------------------


def test_public_key_is_an_immutable_sortable_value() -> None:
    keys = [SecretKey.from_bytes(bytes([i]) * 32).public() for i in range(10)]
    assert sorted(keys) == sorted(keys, key=bytes)
    first, second, *_ = sorted(keys)
    same_as_first = PublicKey.from_bytes(bytes(first))
    assert first < second and second > first and not second < first
    assert first <= same_as_first <= first and first >= same_as_first
    assert min(keys) == first
    copy = PublicKey.from_bytes(bytes(keys[3]))
    assert copy == keys[3] and hash(copy) == hash(keys[3])
    assert copy != keys[4]
    assert {copy: 1}[keys[3]] == 1
    assert keys[0] != bytes(keys[0])
    with pytest.raises(AttributeError):
        copy._bytes = b"x" * 32
    assert pickle.loads(pickle.dumps(copy)) == copy
    with pytest.raises(TypeError):
        _ = keys[0] < bytes(keys[1])


def test_secret_key_basics() -> None:
    secret = SecretKey.from_bytes(SEED_2A)
    assert secret.to_bytes() == SEED_2A
    assert SecretKey.parse(SEED_2A.hex()) == secret
    assert SecretKey.parse(encode_base32(SEED_2A)) == secret
    assert secret == SecretKey.from_bytes(SEED_2A)
    assert secret != SecretKey.from_bytes(SEED_00)
    assert hash(secret) == hash(SecretKey.from_bytes(SEED_2A))
    assert secret.private_key.private_bytes_raw() == SEED_2A
    assert SecretKey.generate() != SecretKey.generate()
    with pytest.raises(AttributeError):
        secret._seed = SEED_00
    with pytest.raises(InvalidKey):
        SecretKey.from_bytes(b"\x01" * 31)
    with pytest.raises(InvalidKey):
        SecretKey.parse(SEED_2A.hex().upper())


def test_secret_key_never_shows_its_bytes() -> None:
    secret = SecretKey.from_bytes(SEED_2A)
    for text in (repr(secret), str(secret), f"{secret}", repr([secret])):
        assert SEED_2A.hex() not in text.lower()
        assert encode_base32(SEED_2A) not in text.lower()
        assert PUB_2A[:10] in text


def test_secret_parse_errors_do_not_echo_the_input() -> None:
    almost = SEED_2A.hex()[:-1] + "g"
    with pytest.raises(InvalidKey) as info:
        SecretKey.parse(almost)
    assert SEED_2A.hex()[:16] not in str(info.value)


# -- signatures ---------------------------------------------------------------


def test_sign_and_verify() -> None:
    secret = SecretKey.from_bytes(SEED_2A)
    sig = secret.sign(b"hello")
    assert len(sig.to_bytes()) == 64 and bytes(sig) == sig.to_bytes()
    assert Signature.from_bytes(sig.to_bytes()) == sig
    assert hash(Signature.from_bytes(sig.to_bytes())) == hash(sig)
    secret.public().verify(b"hello", sig)
    with pytest.raises(InvalidSignature):
        secret.public().verify(b"hellO", sig)
    with pytest.raises(InvalidSignature):
        SecretKey.from_bytes(SEED_00).public().verify(b"hello", sig)
    flipped = Signature.from_bytes(bytes([sig.to_bytes()[0] ^ 1]) + sig.to_bytes()[1:])
    with pytest.raises(InvalidSignature):
        secret.public().verify(b"hello", flipped)
    with pytest.raises(InvalidSignature):
        secret.public().verify(b"hello", sig.to_bytes())  # type: ignore[arg-type]


def test_ed25519_rfc8032_vector() -> None:
    # RFC 8032 §7.1 TEST 1 (empty message).
    secret = SecretKey.from_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert str(secret.public()) == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert secret.sign(b"").to_bytes().hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_signature_with_unreduced_s_is_rejected() -> None:
    secret = SecretKey.from_bytes(SEED_2A)
    sig = secret.sign(b"m").to_bytes()
    s = int.from_bytes(sig[32:], "little")
    malleated = Signature.from_bytes(sig[:32] + (s + L).to_bytes(32, "little"))
    with pytest.raises(InvalidSignature, match="reduced"):
        secret.public().verify(b"m", malleated)


def _clamped_scalar(seed: bytes) -> int:
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def forge_identity_r_signature(seed: bytes, message: bytes) -> bytes:
    """A signature with nonce 0, so R is the identity: valid cofactorless, refused by verify_strict."""
    public = SecretKey.from_bytes(seed).public().to_bytes()
    r_bytes = _encode_point(1, False)
    k = int.from_bytes(hashlib.sha512(r_bytes + public + message).digest(), "little") % L
    s = k * _clamped_scalar(seed) % L
    return r_bytes + s.to_bytes(32, "little")


def test_small_order_r_is_rejected_like_verify_strict() -> None:
    forged = Signature.from_bytes(forge_identity_r_signature(SEED_2A, b"msg"))
    public = SecretKey.from_bytes(SEED_2A).public()
    with pytest.raises(InvalidSignature, match="small-order"):
        public.verify(b"msg", forged)
    # The same bytes pass OpenSSL's plain verification: our explicit check is what refuses them.
    Ed25519PublicKey.from_public_bytes(public.to_bytes()).verify(forged.to_bytes(), b"msg")


@pytest.mark.parametrize("bad", [b"", b"\x00" * 63, b"\x00" * 65])
def test_signature_length(bad: bytes) -> None:
    with pytest.raises(InvalidKey):
        Signature.from_bytes(bad)


# -- codecs -------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff", b"hello", bytes(range(32)), bytes(range(256))])
def test_base32_and_z32_round_trip(data: bytes) -> None:
    assert decode_base32(encode_base32(data)) == data
    assert decode_base32(encode_base32(data).upper()) == data
    assert decode_z32(encode_z32(data)) == data
    assert "=" not in encode_base32(data) + encode_z32(data)


def test_z32_is_the_base32_bit_layout_with_another_alphabet() -> None:
    # z-base-32 spec example: 0xF0 0xBF 0xC7 -> "6n9hq"; "y" is zero bits, "9" all ones.
    assert encode_z32(bytes([0xF0, 0xBF, 0xC7])) == "6n9hq"
    assert encode_z32(b"\x00" * 5) == "yyyyyyyy"
    assert encode_z32(b"\xff" * 5) == "99999999"


@pytest.mark.parametrize("text", ["a", "abc", "abcdef", "ab=", "ab!", "ä"])
def test_base32_rejects(text: str) -> None:
    with pytest.raises(DecodeError):
        decode_base32(text)


def test_z32_rejects() -> None:
    for text in ["6N9HQ", "6n9hv", "0", "6n9h"]:
        with pytest.raises(DecodeError):
            decode_z32(text)
    with pytest.raises(InvalidKey):
        PublicKey.from_z32(PUB_2A_Z32[:-1])
    with pytest.raises(InvalidKey):
        PublicKey.from_z32(PUB_2A_Z32.upper())


# -- key files ----------------------------------------------------------------


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "endpoint.key"
    secret = SecretKey.from_bytes(SEED_2A)
    secret.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes() == SEED_2A.hex().encode() + b"\n"
    assert SecretKey.load(path) == secret
    assert SecretKey.load(str(path)) == secret
    assert [p.name for p in tmp_path.iterdir()] == ["endpoint.key"]


def test_save_replaces_and_restricts_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("old")
    path.chmod(0o644)
    SecretKey.from_bytes(SEED_00).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SecretKey.load(path) == SecretKey.from_bytes(SEED_00)


def test_save_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        SecretKey.from_bytes(SEED_2A).save(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        SEED_2A,
        SEED_2A.hex().encode(),
        SEED_2A.hex().upper().encode() + b"\r\n",
        b"  " + SEED_2A.hex().encode() + b"\n\n",
    ],
    ids=["raw32", "hex-no-newline", "upper-crlf", "whitespace"],
)
def test_load_accepts(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    assert SecretKey.load(path).to_bytes() == SEED_2A


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "wrong length"),
        (SEED_2A.hex()[:-2].encode() + b"\n", "wrong length"),
        (SEED_2A.hex().encode() + b"00\n", "wrong length"),
        (SEED_2A[:31], "wrong length"),
        (SEED_2A + b"\x00", "wrong length"),
        (SEED_2A.hex()[:-1].encode() + b"z\n", "corrupt"),
        ("é".encode() * 32, "corrupt"),
        (b"x" * 5000, "too large"),
    ],
)
def test_load_rejects(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as info:
        SecretKey.load(path)
    assert SEED_2A.hex()[:20] not in str(info.value)
    assert str(path) in str(info.value)


def test_load_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        SecretKey.load(tmp_path / "nope")
    with pytest.raises(KeyFileError, match="cannot read"):
        SecretKey.load(tmp_path)
    if os.geteuid() != 0:
        path = tmp_path / "locked"
        SecretKey.from_bytes(SEED_2A).save(path)
        path.chmod(0)
        with pytest.raises(KeyFileError, match="cannot read"):
            SecretKey.load(path)


def test_paths_with_nul_are_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        SecretKey.load(str(tmp_path) + "/a\0b")
    with pytest.raises(KeyFileError, match="cannot write"):
        SecretKey.from_bytes(SEED_2A).save(str(tmp_path) + "/a\0b")


def test_save_failure_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot write"):
        SecretKey.from_bytes(SEED_2A).save(tmp_path / "missing-dir" / "k")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "x").write_text("")
    with pytest.raises(KeyFileError, match="cannot write"):
        SecretKey.from_bytes(SEED_2A).save(tmp_path / "adir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]


def test_errors_share_one_base() -> None:
    for cls in (InvalidKey, InvalidSignature, KeyFileError):
        assert issubclass(cls, IrohError)
