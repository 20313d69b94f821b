"""Who may use the relay: an immutable policy checked once the client proved its EndpointId.

Rules, in order: the denylist always wins; a presented token is checked whenever trusted
issuers are configured (a bad one is refused even where no token is needed, so clients learn
about it); without a token, ``everyone`` admits anyone, ``allowlist`` admits the listed ids
and ``tokens`` admits nobody. A token presented to a relay without trusted issuers is ignored,
as iroh-relay ignores tokens when it does not use them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from irohpy.base.keys import PublicKey
from irohpy.errors import ConfigError, InvalidToken
from irohpy.relay.server.tokens import verify_token


class AccessMode(enum.Enum):
    EVERYONE = "everyone"
    ALLOWLIST = "allowlist"
    TOKENS = "tokens"


@dataclass(frozen=True)
class Decision:
    """The outcome; ``kind`` labels refusals in metrics, ``reason`` goes to the client."""

    allowed: bool
    reason: str = ""
    kind: str = ""


ALLOWED = Decision(True)


@dataclass(frozen=True)
class AccessPolicy:
    mode: AccessMode = AccessMode.EVERYONE
    allowlist: frozenset[PublicKey] = field(default_factory=frozenset)
    denylist: frozenset[PublicKey] = field(default_factory=frozenset)
    trusted_issuers: frozenset[PublicKey] = field(default_factory=frozenset)
    revoked_tokens: frozenset[bytes] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.mode is AccessMode.TOKENS and not self.trusted_issuers:
            raise ConfigError("access mode 'tokens' needs at least one trusted issuer")

    def check(self, endpoint_id: PublicKey, token: str | None, now: float) -> Decision:
        """Decide for an authenticated client; ``now`` is unix time, for token expiry."""
        if endpoint_id in self.denylist:
            return Decision(False, "endpoint is on this relay's denylist", "denylisted")
        if token is not None and self.trusted_issuers:
            try:
                verify_token(token, endpoint_id=endpoint_id, trusted_issuers=self.trusted_issuers,
                             revoked=self.revoked_tokens, now=now)
            except InvalidToken as exc:
                return Decision(False, str(exc), f"token_{exc.kind}")
            return ALLOWED
        if self.mode is AccessMode.TOKENS:
            return Decision(False, "this relay requires an access token", "token_missing")
        if self.mode is AccessMode.ALLOWLIST and endpoint_id not in self.allowlist:
            return Decision(False, "endpoint is not on this relay's allowlist", "not_allowlisted")
        return ALLOWED


# Every refusal kind, so metrics can show each one from the start.
DENIAL_KINDS = (
    "denylisted", "not_allowlisted", "token_missing", "token_malformed", "token_untrusted_issuer",
    "token_bad_signature", "token_revoked", "token_expired", "token_wrong_subject",
)
