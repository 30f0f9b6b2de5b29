"""IPFS throughput: the project's client (`IpfsClient.add` / `.cat`, which streams, retries and verifies
the CID while reading) against a raw httpx call of the same request to the same daemon, in the same run.

    python -m bench.ipfs                 # 10 MB and 100 MB payloads, best of 3
    python -m bench.ipfs --repeats 5

The daemon is the project's own (js-ipfs, offline, loopback) in a temporary repo. Each size is measured
interleaved (client, raw, client, raw, …) so drift in the machine's load hits both; best-of-n. Ratios are
client throughput / raw throughput for the 100 MB case (target: >= 0.9)."""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ipfs.client import ADD_PARAMS, IpfsClient
from ipfs.daemon import IpfsDaemon

RESULTS = Path(__file__).resolve().parent / "results" / "ipfs.json"
SIZES_MB = (10, 100)


def raw_add(http: httpx.Client, data: bytes) -> str:
    """The same multipart `add` request as the client's, sent as one prebuilt body: no streaming, no retries,
    no checks beyond the status."""
    boundary = secrets.token_hex(16)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="payload"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    response = http.post("/add", params={**ADD_PARAMS, "pin": "true"}, content=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    response.raise_for_status()
    return str(json.loads(response.text.strip().splitlines()[-1])["Hash"])


def raw_cat(http: httpx.Client, cid: str) -> bytes:
    response = http.post("/cat", params={"arg": cid})
    response.raise_for_status()
    return response.content


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(client: IpfsClient, http: httpx.Client, size_mb: int, repeats: int) -> dict[str, Any]:
    data = secrets.token_bytes(size_mb * 1_000_000)
    cid = client.add(data)
    assert raw_add(http, data) == cid, "client and raw add disagree on the CID"
    assert client.cat(cid, len(data)) == data
    assert raw_cat(http, cid) == data
    # Interleave single runs so both paths see the same machine load; keep the best of each.
    add_client = add_raw = cat_client = cat_raw = float("inf")
    for _ in range(repeats):
        add_client = min(add_client, timed(lambda: client.add(data)))
        add_raw = min(add_raw, timed(lambda: raw_add(http, data)))
        cat_client = min(cat_client, timed(lambda: client.cat(cid, len(data))))
        cat_raw = min(cat_raw, timed(lambda: raw_cat(http, cid)))
    mb = len(data) / 1e6
    row = {"size_mb": size_mb, "cid": cid,
           "add_client_mb_s": mb / add_client, "add_raw_mb_s": mb / add_raw,
           "cat_client_mb_s": mb / cat_client, "cat_raw_mb_s": mb / cat_raw,
           "add_ratio_vs_raw": add_raw / add_client, "cat_ratio_vs_raw": cat_raw / cat_client}
    print(f"  {size_mb:>4} MB: add {row['add_client_mb_s']:.1f} MB/s (raw {row['add_raw_mb_s']:.1f}, "
          f"ratio {row['add_ratio_vs_raw']:.3f}); cat {row['cat_client_mb_s']:.1f} MB/s "
          f"(raw {row['cat_raw_mb_s']:.1f}, ratio {row['cat_ratio_vs_raw']:.3f})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-ipfs-") as folder,
        IpfsDaemon(Path(folder) / "repo") as daemon,
        IpfsClient(daemon.api_url, timeout=120.0) as client,
        httpx.Client(base_url=daemon.api_url + "/api/v0", timeout=120.0) as http,
    ):
        version = client.version()
        print(f"IPFS daemon {version} at {daemon.api_url}")
        rows = [measure(client, http, size, args.repeats) for size in SIZES_MB]
    big = rows[-1]
    result = {
        "add_ratio_vs_raw": big["add_ratio_vs_raw"], "cat_ratio_vs_raw": big["cat_ratio_vs_raw"],
        "target_ratio": 0.9, "sizes": rows, "repeats": args.repeats, "daemon_version": version,
        "note": "client cat includes streaming CID verification (sha2-256 DAG recomputation); raw cat does not",
        "machine": platform.machine(), "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"100 MB: add ratio {big['add_ratio_vs_raw']:.3f}, cat ratio {big['cat_ratio_vs_raw']:.3f} "
          f"(target >= 0.9) -> {RESULTS}")


if __name__ == "__main__":
    main()
