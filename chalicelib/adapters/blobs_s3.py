"""BlobStore on S3: the results bucket, with large job inputs and results under `jobs/<id>/`."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import LazyClient
from chalicelib.domain.errors import BackendRejected


class S3Blobs:
    """Objects in one bucket; the bucket's lifecycle rule expires them with the jobs (infra: ResultsBucket)."""

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client

    client = LazyClient("s3")

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except BackendRejected as exc:
            if exc.aws_code in ("NoSuchKey", "404"):
                return None
            raise

    def url(self, key: str, ttl_s: int) -> str:
        params = {"Bucket": self.bucket, "Key": key}
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_s))
