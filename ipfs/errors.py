"""Errors for bytes that leave or reach a machine. Each carries the context a caller needs to report it."""

from __future__ import annotations

from base.errors import TrainmarketError


class IpfsError(TrainmarketError):
    """Root of storage-side errors."""


class IpfsUnavailable(IpfsError):
    """The daemon's RPC API cannot be reached."""

    temporary = True

    def __init__(self, api_url: str, reason: str) -> None:
        self.api_url = api_url
        self.reason = reason
        super().__init__(f"IPFS daemon unreachable at {api_url}: {reason}")


class IpfsTimeout(IpfsError):
    """The daemon did not answer in time (e.g. an offline daemon asked for a block it does not have)."""

    temporary = True

    def __init__(self, api_url: str, what: str, seconds: float) -> None:
        self.api_url = api_url
        self.what = what
        self.seconds = seconds
        super().__init__(f"IPFS daemon at {api_url} gave no answer to {what} within {seconds:.0f}s")


class IpfsRequestFailed(IpfsError):
    """The daemon answered with an error status."""

    temporary = True

    def __init__(self, what: str, status: int, body: str) -> None:
        self.what = what
        self.status = status
        super().__init__(f"IPFS {what} failed with HTTP {status}: {body[:300]}")


class CidMismatch(IpfsError):
    """Bytes do not hash to the CID they were fetched by."""

    temporary = True

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"content does not match its CID: expected {expected}, bytes hash to {actual}")


class InvalidCid(IpfsError):
    """A string that is not a CID this project accepts (CIDv1 base32, sha2-256, raw or dag-pb)."""

    def __init__(self, cid: str, reason: str) -> None:
        self.cid = cid
        self.reason = reason
        super().__init__(f"invalid CID {cid[:80]!r}: {reason}")


class PayloadTooLarge(IpfsError):
    """A payload is larger than the configured limit; fetching or decoding stopped at the limit."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f"{what} exceeds the size limit of {limit} bytes")


class IpfsBadResponse(IpfsError):
    """The daemon (or something between it and us) answered 200 with a body that is not what the API returns
    (cut, garbled, oversized JSON)."""

    temporary = True

    def __init__(self, api_url: str, what: str, reason: str) -> None:
        self.api_url = api_url
        self.what = what
        self.reason = reason
        super().__init__(f"IPFS daemon at {api_url} gave a malformed answer to {what}: {reason}")
