"""botocore's part of the store: the credentials checked up front, and a client that signs URLs.

Credentials come from the AWS chain as every S3 tool reads them (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile, a role): predq keeps no secret of its own in Settings.
"""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.config import Config

from app.errors import StoreUnavailable


def require_credentials(root: str) -> None:
    """StoreUnavailable unless the AWS chain finds credentials for ``root``."""
    if botocore.session.Session().get_credentials() is None:
        raise StoreUnavailable(
            f"no S3 credentials for {root}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " (or an AWS profile or role)"
        )


def s3_client(endpoint: str, region: str) -> Any:
    """A botocore S3 client for ``endpoint`` (AWS's own when empty), path-style, SigV4."""
    session = botocore.session.Session()
    if session.get_credentials() is None:
        raise StoreUnavailable("no S3 credentials to sign a URL with")
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    return session.create_client("s3", endpoint_url=endpoint or None, region_name=region, config=config)
