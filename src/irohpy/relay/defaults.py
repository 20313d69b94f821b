"""number 0's public infrastructure, as Rust iroh's defaults name it.

Only the N0 preset and RelayMode.default()/staging() use these; tests and
``irohpy demo`` never do: they run local servers.
"""

from __future__ import annotations

QAD_PORT = 7842

PROD_RELAYS = (
    "https://use1-1.relay.n0.iroh.link./",
    "https://usw1-1.relay.n0.iroh.link./",
    "https://euc1-1.relay.n0.iroh.link./",
    "https://aps1-1.relay.n0.iroh.link./",
)
STAGING_RELAYS = (
    "https://use1-1.staging-relay.n0.iroh.link./",
    "https://euc1-1.staging-relay.n0.iroh.link./",
)
# Address lookup: pkarr publishing over HTTP and resolution through DNS.
PROD_PKARR_RELAY = "https://dns.iroh.link/pkarr"
PROD_DNS_ORIGIN = "dns.iroh.link."
STAGING_PKARR_RELAY = "https://staging-dns.iroh.link/pkarr"
STAGING_DNS_ORIGIN = "staging-dns.iroh.link."
