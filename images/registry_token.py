#!/usr/bin/env python3
"""Print a short-lived registry password on stdout, for `podman login --password-stdin` (roles/images).

    python images/registry_token.py gcp      # Artifact Registry: an OAuth access token (user oauth2accesstoken)
    python images/registry_token.py ecr REGION  # Amazon ECR: the GetAuthorizationToken password (user AWS)

Credentials come from the environment only (GCP_SERVICE_ACCOUNT_FILE or GOOGLE_APPLICATION_CREDENTIALS;
the AWS SDK's usual variables or profile). The token goes to stdout and nowhere else: never logged.
"""

from __future__ import annotations

import base64
import os
import sys


def gcp_token() -> str:
    import google.auth
    import google.auth.transport.requests
    from google.oauth2 import service_account

    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    key_file = os.environ.get("GCP_SERVICE_ACCOUNT_FILE")
    if key_file:
        creds = service_account.Credentials.from_service_account_file(key_file, scopes=scopes)
    else:
        creds, _ = google.auth.default(scopes=scopes)
    creds.refresh(google.auth.transport.requests.Request())
    return creds.token


def ecr_token(region: str) -> str:
    import boto3

    data = boto3.client("ecr", region_name=region).get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if user != "AWS":
        raise SystemExit(f"registry_token.py: unexpected ECR token user {user!r}")
    return password


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "gcp":
        token = gcp_token()
    elif len(argv) == 2 and argv[0] == "ecr":
        token = ecr_token(argv[1])
    else:
        print("usage: registry_token.py gcp | ecr REGION", file=sys.stderr)
        return 2
    sys.stdout.write(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
