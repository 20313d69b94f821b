"""Short-lived relay access tokens, signed by an issuer key the relay trusts (sans-IO).

Text form (``docs/deploy-a-relay.md``)::

    irohrelay1.<base64url payload>.<base64url signature>      (no padding)

The payload is postcard ``{issuer: [u8; 32], subject: Option<[u8; 32]>, expires_at: u64,
token_id: [u8; 16]}``: ``subject`` None means any endpoint, ``expires_at`` is unix seconds.
The signature is Ed25519 by ``issuer`` over ``SIGNING_DOMAIN + payload``, so a token can never
double as some other signed iroh message. Parsing is strict (one accepted spelling per
token), which keeps revocation by token id and log correlation unambiguous.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from irohpy.base.keys import PublicKey, SecretKey, Signature
from irohpy.base.postcard import Reader, Writer
from irohpy.errors import DecodeError, InvalidKey, InvalidSignature, InvalidToken

PREFIX: Final = "irohrelay1"
SIGNING_DOMAIN: Final = b"irohpy relay access token v1\x00"
TOKEN_ID_LENGTH: Final = 16
MAX_TOKEN_LENGTH: Final = 512
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class AccessToken:
    """What a token grants: ``subject`` (or anyone, if None) may use the relay until ``expires_at``."""

    issuer: PublicKey
    subject: PublicKey | None
    expires_at: int
    token_id: bytes

    def payload(self) -> bytes:
        w = Writer()
        w.fixed(bytes(self.issuer), 32)
        w.option(self.subject, lambda key: w.fixed(bytes(key), 32))
        w.u64(self.expires_at)
        w.fixed(self.token_id, TOKEN_ID_LENGTH)
        return w.finish()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str, what: str) -> bytes:
    """Unpadded base64url with exactly one accepted spelling per byte string."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise DecodeError(f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise DecodeError(f"{what} has non-zero trailing bits")
    return data


def _malformed(detail: str) -> InvalidToken:
    return InvalidToken(f"access token malformed: {detail}", kind="malformed")


def parse_token(text: str) -> tuple[AccessToken, Signature]:
    """Split and decode a token without checking its signature; raises InvalidToken."""
    if not isinstance(text, str) or not text.isascii():
        raise _malformed("not ASCII text")
    if len(text) > MAX_TOKEN_LENGTH:
        raise _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    parts = text.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise _malformed(f"expected {PREFIX}.<payload>.<signature>")
    try:
        payload = _b64decode(parts[1], "payload")
        raw_signature = _b64decode(parts[2], "signature")
        reader = Reader(payload)
        issuer = PublicKey.from_bytes(reader.fixed(32))
        subject = reader.option(lambda: PublicKey.from_bytes(reader.fixed(32)))
        expires_at = reader.u64()
        token_id = reader.fixed(TOKEN_ID_LENGTH)
        reader.finish()
        signature = Signature.from_bytes(raw_signature)
    except (DecodeError, InvalidKey) as exc:
        raise _malformed(str(exc)) from None
    return AccessToken(issuer, subject, expires_at, token_id), signature


def issue_token(
    issuer: SecretKey,
    subject: PublicKey | None,
    ttl: int,
    *,
    now: float | None = None,
    token_id: bytes | None = None,
) -> str:
    """A token for ``subject`` (None: any endpoint) valid for ``ttl`` seconds from ``now``."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    token_id = os.urandom(TOKEN_ID_LENGTH) if token_id is None else token_id
    if len(token_id) != TOKEN_ID_LENGTH:
        raise ValueError(f"a token id has {TOKEN_ID_LENGTH} bytes")
    issued = int(time.time() if now is None else now)
    token = AccessToken(issuer.public(), subject, issued + ttl, bytes(token_id))
    payload = token.payload()
    signature = issuer.sign(SIGNING_DOMAIN + payload)
    return f"{PREFIX}.{_b64encode(payload)}.{_b64encode(bytes(signature))}"


def verify_token(
    text: str,
    *,
    endpoint_id: PublicKey,
    trusted_issuers: Collection[PublicKey],
    revoked: Collection[bytes] = (),
    now: float,
) -> AccessToken:
    """The token, if it is well-formed, signed by a trusted issuer, live, and for ``endpoint_id``.

    Otherwise InvalidToken whose ``kind`` is one of malformed, untrusted_issuer, bad_signature,
    revoked, expired, wrong_subject (checked in that order).
    """
    token, signature = parse_token(text)
    if token.issuer not in trusted_issuers:
        raise InvalidToken("access token issuer is not trusted by this relay", kind="untrusted_issuer")
    try:
        token.issuer.verify(SIGNING_DOMAIN + token.payload(), signature)
    except InvalidSignature:
        raise InvalidToken("access token signature invalid", kind="bad_signature") from None
    if token.token_id in revoked:
        raise InvalidToken(f"access token {token.token_id.hex()} was revoked", kind="revoked")
    if now >= token.expires_at:
        raise InvalidToken("access token expired", kind="expired")
    if token.subject is not None and token.subject != endpoint_id:
        raise InvalidToken("access token was issued for another endpoint", kind="wrong_subject")
    return token
