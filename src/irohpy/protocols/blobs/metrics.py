"""The blobs metrics group: requests served, bytes served and fetched, verification failures."""

from __future__ import annotations

from irohpy.metrics import Counter, MetricsGroup

REQUEST_RESULTS = ("served", "refused", "failed")


class BlobsMetrics(MetricsGroup, name="blobs"):
    requests = Counter("Requests our provider handled, by result", labels=("result",))
    bytes_served = Counter("Bytes our provider wrote in responses (bao encoded)")
    download_bytes = Counter("Verified blob bytes the downloader stored")
    downloads_success = Counter("Downloads that completed")
    downloads_error = Counter("Downloads that failed")
    verification_failures = Counter("Responses whose data did not verify against the hash (provider dropped)")
    providers_dropped = Counter("Providers a download stopped using (stalled, failed, or bad data)")

    def __init__(self) -> None:
        super().__init__()
        for result in REQUEST_RESULTS:
            self.requests.labels(result)
