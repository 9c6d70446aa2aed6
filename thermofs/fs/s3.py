"""The S3 object store (fs/objectstore.py's ObjectStore) on boto3: AWS S3, Ceph RGW, MinIO, SeaweedFS.

Credentials come from boto3's default chain (environment, ``~/.aws/credentials``, profiles, instance
roles): thermofs never reads, stores or prints them. Errors are translated into the domain's:
Unreachable (retried with backoff until the call's time bound, then given up: a read answers EIO),
ObjectMissing, and BackendError with a message that names the bucket and never a credential.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bexc
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from thermofs.fs.objectstore import BackendError, BackendSpec, ObjectMissing, Unreachable

log = logging.getLogger("thermofs.s3")

T = TypeVar("T")
# A request that gets no answer within this bound (connect or read) is retried: a ranged GET of a
# 1 MiB block from SeaweedFS on this machine takes 4-8 ms, a 64 MiB PUT under a second.
REQUEST_TIMEOUT = 10.0
# Backoff between retries: doubling from the first to the last, plus up to 50% jitter.
FIRST_BACKOFF, MAX_BACKOFF = 0.1, 5.0
# Objects from this size are uploaded in parts, this large, up to this many at once.
MULTIPART_THRESHOLD = 32 << 20
PART_BYTES = 16 << 20
PART_CONCURRENCY = 4
# Error codes that retrying cannot cure, and what to tell the user.
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
          "AllAccessDisabled", "Forbidden", "403"}
MISSING = {"NoSuchKey", "404", "NotFound"}
# A conditional write that lost: the object changed (or appeared) since the tag it was given.
PRECONDITION = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class S3Store:
    """Objects under ``spec.prefix`` in ``spec.bucket``. Builds no connection until the first call;
    thread-safe (boto3 clients are). ``timeout``: how long one call keeps retrying before it gives up
    with Unreachable (reads; uploads are retried by their caller)."""

    def __init__(self, spec: BackendSpec, timeout: float = 60.0) -> None:
        self.spec = spec
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("gets", "puts", "deletes", "lists", "heads", "bytes_got", "bytes_put",
                                      "retries"), 0)

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                per_request = min(REQUEST_TIMEOUT, max(self.timeout, 1.0))
                config = Config(connect_timeout=per_request, read_timeout=per_request,
                                retries={"max_attempts": 1, "mode": "standard"},
                                s3={"addressing_style": "path"} if self.spec.endpoint else {},
                                max_pool_connections=16)
                session = boto3.session.Session()
                self._client = session.client("s3", endpoint_url=self.spec.endpoint or None,
                                              region_name=self.spec.region or None, config=config)
            return self._client

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _key(self, key: str) -> str:
        return self.spec.prefix + key

    def _call(self, what: str, key: str, action: Callable[[], T]) -> T:
        """Run ``action``, retrying network errors and server errors with backoff until ``timeout``."""
        deadline = time.monotonic() + self.timeout
        backoff = FIRST_BACKOFF
        while True:
            try:
                return action()
            except bexc.NoCredentialsError:
                raise BackendError(f"no credentials for {self.spec.url}: set AWS_ACCESS_KEY_ID and "
                                   f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or write ~/.aws/credentials") from None
            except bexc.ClientError as e:
                code, status = _answer_of(e)
                if code in MISSING:
                    raise ObjectMissing(f"{what} {self.spec.url}{key}: no such object") from None
                if code == "NoSuchBucket":
                    raise BackendError(f"bucket {self.spec.bucket!r} does not exist at "
                                       f"{self.spec.endpoint or 'AWS S3'}") from None
                if code in DENIED:
                    raise BackendError(f"access to {self.spec.url} denied ({code}): check the credentials "
                                       f"and the bucket's policy") from None
                if status and status < 500 and code not in ("SlowDown", "RequestTimeout", "429"):
                    raise BackendError(f"{what} {self.spec.url}{key} refused: {code or status}") from None
                problem = f"{code or status}"
            except (bexc.EndpointConnectionError, bexc.ConnectionError, bexc.HTTPClientError,
                    bexc.ConnectTimeoutError, bexc.ReadTimeoutError, bexc.ResponseStreamingError) as e:
                problem = type(e).__name__
            except bexc.BotoCoreError as e:  # a bad endpoint URL, a missing region: retrying will not help
                raise BackendError(f"{what} {self.spec.url}{key}: {type(e).__name__}: {e}") from None
            now = time.monotonic()
            if now + backoff > deadline:
                raise Unreachable(f"{what} {self.spec.url}{key}: the object store at "
                                  f"{self.spec.endpoint or 'AWS S3'} did not answer within {self.timeout:g} s "
                                  f"({problem})")
            self._count("retries")
            log.info("%s %s: %s; retrying in %.1f s", what, key, problem, backoff)
            time.sleep(backoff * (1 + 0.5 * (hash((now, key)) % 100) / 100))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def put(self, key: str, data: bytes) -> None:
        self._call("PUT", key, lambda: self._s3().put_object(Bucket=self.spec.bucket, Key=self._key(key),
                                                              Body=data))
        self._count("puts")
        self._count("bytes_put", len(data))

    def put_file(self, key: str, path: Path) -> None:
        size = path.stat().st_size
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_BYTES,
                                max_concurrency=PART_CONCURRENCY, use_threads=True)
        self._call("PUT", key, lambda: self._s3().upload_file(str(path), self.spec.bucket, self._key(key),
                                                               Config=config))
        self._count("puts", max(1, -(-size // PART_BYTES)) if size >= MULTIPART_THRESHOLD else 1)
        self._count("bytes_put", size)

    def get(self, key: str) -> bytes:
        def fetch() -> bytes:
            body: bytes = self._s3().get_object(Bucket=self.spec.bucket, Key=self._key(key))["Body"].read()
            return body

        data = self._call("GET", key, fetch)
        self._count("gets")
        self._count("bytes_got", len(data))
        return data

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        def fetch() -> tuple[bytes, str]:
            answer = self._s3().get_object(Bucket=self.spec.bucket, Key=self._key(key))
            return answer["Body"].read(), str(answer["ETag"])

        data, tag = self._call("GET", key, fetch)
        self._count("gets")
        self._count("bytes_got", len(data))
        return data, tag

    def put_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """S3's conditional write (``If-None-Match: *`` or ``If-Match: tag``: AWS S3 since 2024,
        SeaweedFS, MinIO). A server that ignores the condition writes anyway: RemoteLock reads its
        lock back for those."""
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}

        def attempt() -> str | None:
            try:
                answer = self._s3().put_object(Bucket=self.spec.bucket, Key=self._key(key), Body=data, **condition)
            except bexc.ClientError as e:
                code, status = _answer_of(e)
                if code in PRECONDITION or status in (409, 412):
                    return None
                raise
            return str(answer["ETag"])

        written = self._call("PUT", key, attempt)
        self._count("puts")
        self._count("bytes_put", len(data))
        return written

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        def fetch() -> bytes:
            answer = self._s3().get_object(Bucket=self.spec.bucket, Key=self._key(key),
                                           Range=f"bytes={offset}-{offset + length - 1}")
            body: bytes = answer["Body"].read()
            return body

        data = self._call("GET", key, fetch)
        self._count("gets")
        self._count("bytes_got", len(data))
        return data

    def head(self, key: str) -> int | None:
        try:
            answer = self._call("HEAD", key, lambda: self._s3().head_object(Bucket=self.spec.bucket,
                                                                             Key=self._key(key)))
        except ObjectMissing:
            return None
        finally:
            self._count("heads")
        return int(answer["ContentLength"])

    def delete(self, key: str) -> None:
        self._call("DELETE", key, lambda: self._s3().delete_object(Bucket=self.spec.bucket, Key=self._key(key)))
        self._count("deletes")

    def list(self, prefix: str) -> dict[str, int]:
        def listing() -> dict[str, int]:
            out: dict[str, int] = {}
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.spec.bucket,
                                                                         Prefix=self._key(prefix))
            for page in pages:
                self._count("lists")
                for item in page.get("Contents", ()):
                    out[str(item["Key"])[len(self.spec.prefix):]] = int(item["Size"])
            return out

        return self._call("LIST", prefix, listing)


def _answer_of(error: bexc.ClientError) -> tuple[str, int]:
    """The error code and the HTTP status of a refused request (empty, 0 where the answer has none)."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status
