"""A thin httpx client of the IPFS RPC API (`/api/v0/*`), verified on every read.

Why not `ipfshttpclient`: it is unmaintained since 2021, its `connect()` refuses every daemon newer than
0.8, and it cannot stop a download at a size limit. Twenty lines of httpx speak the same API to js-ipfs
and Kubo alike, stream in both directions, and let us verify the CID while the bytes arrive.

Verification: every `cat` recomputes the CID locally from the streamed bytes (`ipfs.cid.DagVerifier`:
raw leaf for one chunk, the balanced UnixFS DAG for more) and raises CidMismatch before returning, so a
lying or corrupted daemon can never hand undecoded bytes to a caller."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx

from ipfs.cid import DagVerifier, parse_cid
from ipfs.errors import CidMismatch, IpfsRequestFailed, IpfsTimeout, IpfsUnavailable, PayloadTooLarge

T = TypeVar("T")
ADD_PARAMS = {"cid-version": "1", "raw-leaves": "true", "cid-base": "base32", "chunker": "size-262144"}
STREAM_CHUNK = 1 << 20


class IpfsClient:
    """Client of one daemon's RPC API. Connection errors are retried `retries` times with backoff;
    a daemon that stays silent longer than `timeout` seconds between bytes raises IpfsTimeout."""

    def __init__(self, api_url: str, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(base_url=self.api_url + "/api/v0", timeout=httpx.Timeout(timeout))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IpfsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        for tries in range(self.retries + 1):
            try:
                return attempt()
            except httpx.TimeoutException as err:
                raise IpfsTimeout(self.api_url, what, self.timeout) from err
            except httpx.TransportError as err:
                if tries == self.retries:
                    raise IpfsUnavailable(self.api_url, f"{type(err).__name__}: {err}") from err
                time.sleep(self.backoff * 2**tries)
        raise AssertionError("unreachable")

    def _post_json(self, what: str, params: dict[str, str]) -> dict[str, object]:
        def attempt() -> dict[str, object]:
            response = self._http.post(f"/{what}", params=params)
            if response.status_code != 200:
                raise IpfsRequestFailed(what, response.status_code, response.text)
            return dict(json.loads(response.text.strip().splitlines()[-1]))

        return self._retrying(what, attempt)

    def version(self) -> str:
        return str(self._post_json("version", {})["Version"])

    def add(self, data: bytes | Path, pin: bool = True, only_hash: bool = False) -> str:
        """Add bytes (or a file, streamed from disk) and return the CIDv1 base32 the daemon reports."""
        params = {**ADD_PARAMS, "pin": str(pin).lower(), "only-hash": str(only_hash).lower()}
        boundary = secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="payload"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            if isinstance(data, Path):
                with data.open("rb") as handle:
                    while chunk := handle.read(STREAM_CHUNK):
                        yield chunk
            else:
                for start in range(0, len(data), STREAM_CHUNK):
                    yield data[start : start + STREAM_CHUNK]
            yield tail

        def attempt() -> str:
            response = self._http.post(
                "/add",
                params=params,
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            if response.status_code != 200:
                raise IpfsRequestFailed("add", response.status_code, response.text)
            return str(json.loads(response.text.strip().splitlines()[-1])["Hash"])

        return self._retrying("add", attempt)

    def cat(self, cid: str, max_bytes: int) -> bytes:
        """The bytes behind `cid`, at most `max_bytes` of them, verified against the CID."""
        parse_cid(cid)  # refuse a malformed CID before asking the daemon anything

        def attempt() -> bytes:
            verifier = DagVerifier()
            parts: list[bytes] = []
            size = 0
            # `timeout` bounds js-ipfs's own wait for blocks it does not hold (offline, it would wait forever).
            params = {"arg": cid, "timeout": f"{int(self.timeout * 1000)}ms"}
            with self._http.stream("POST", "/cat", params=params) as response:
                if response.status_code != 200:
                    raise IpfsRequestFailed("cat", response.status_code, response.read().decode(errors="replace"))
                for chunk in response.iter_bytes(STREAM_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"content of {cid}", max_bytes)
                    verifier.update(chunk)
                    parts.append(chunk)
            actual = verifier.cid()
            if actual != cid:
                raise CidMismatch(cid, actual)
            return b"".join(parts)

        return self._retrying("cat", attempt)

    def pin_add(self, cid: str) -> None:
        parse_cid(cid)
        self._post_json("pin/add", {"arg": cid})

    def pin_rm(self, cid: str) -> None:
        parse_cid(cid)
        self._post_json("pin/rm", {"arg": cid})
