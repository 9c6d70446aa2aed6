"""Where sealed segments, metadata backups and the mount lock live when a volume uses an object store
(docs/DESIGN.md, "Object store backend"): a small interface, so the layers above know nothing of S3.

Keys are relative to the volume's prefix (``s3://BUCKET/PREFIX``); docs/FORMAT.md names every object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from thermofs.fs.errors import FsError, StoreError, UnusableTarget

SEGMENTS_PREFIX = "segments/"
BACKUPS_PREFIX = "meta/"
CONFIG_KEY = "thermofs.json"
LOCK_KEY = "lock"


class Unreachable(FsError):
    """The object store did not answer within the configured bound (after retries): reads give EIO."""


class ObjectMissing(FsError):
    """The object does not exist."""


class BackendError(UnusableTarget):
    """The object store refused us for a reason retrying will not fix: no such bucket, access denied,
    no credentials. The message says which and never carries a credential."""


class ObjectStore(Protocol):
    """An S3-like store of immutable objects under one prefix."""

    def put(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None:
        """Upload a file as one object (multipart when large)."""
        ...

    def get(self, key: str) -> bytes: ...

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The object and its entity tag (ObjectMissing if there is none)."""
        ...

    def put_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """Write the object only if its entity tag is still ``tag`` (None: only if there is no such
        object): a compare-and-swap. The new tag, or None if another write came first."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the object)."""
        ...

    def head(self, key: str) -> int | None:
        """The object's size, None if it does not exist."""
        ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` with its size."""
        ...

    def counters(self) -> dict[str, int]:
        """Requests made so far: gets, puts, deletes, lists, heads, bytes got and put, retries."""
        ...


@dataclass(frozen=True)
class BackendSpec:
    """What thermofs.json's ``backend`` names: the bucket, the prefix, the endpoint, the region."""

    bucket: str
    prefix: str  # "" or ending in "/"
    endpoint: str = ""
    region: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def as_dict(self) -> dict[str, str]:
        return {"url": self.url, "endpoint": self.endpoint, "region": self.region}

    @classmethod
    def from_dict(cls, raw: dict[str, str]) -> BackendSpec:
        return parse_url(raw.get("url", ""), raw.get("endpoint", ""), raw.get("region", ""))


def parse_url(url: str, endpoint: str = "", region: str = "") -> BackendSpec:
    """``s3://BUCKET/PREFIX``; StoreError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StoreError(f"not an object store URL: {url!r} (expected s3://BUCKET/PREFIX)")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise StoreError(f"an s3:// URL names a bucket and a prefix only: {url!r}")
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63:
        raise StoreError(f"bucket name {bucket!r} must be 3 to 63 characters long")
    prefix = parts.path.strip("/")
    if endpoint:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise StoreError(f"endpoint must be an http:// or https:// URL, not {endpoint!r}")
    return BackendSpec(bucket, prefix + "/" if prefix else "", endpoint, region)
