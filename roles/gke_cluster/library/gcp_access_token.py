#!/usr/bin/python
# Why a module: the GKE node pool settings this role needs (GPU time-sharing, GPU driver installation,
# spot) are only reachable through the GKE REST API, which ansible.builtin.uri calls with an OAuth2
# access token. google.cloud has no module or lookup that returns one, and minting it needs a signed
# JWT (service account) or the metadata server, which google-auth does. Read-only: no changes made.


DOCUMENTATION = r"""
module: gcp_access_token
short_description: Mint an OAuth2 access token for Google Cloud APIs
description:
  - Returns a short-lived access token for the given credentials, the way the google.cloud modules
    authenticate (same auth_kind values).
options:
  auth_kind:
    description: serviceaccount (key file), application (Application Default Credentials) or machineaccount (GCE metadata).
    type: str
    required: true
    choices: [serviceaccount, application, machineaccount]
  service_account_file:
    description: Key file for auth_kind=serviceaccount.
    type: path
  service_account_email:
    description: Service account for auth_kind=machineaccount (default the instance's).
    type: str
  scopes:
    description: OAuth2 scopes.
    type: list
    elements: str
    default: [https://www.googleapis.com/auth/cloud-platform]
requirements: [google-auth, requests]
author: gpu-serving-harness
"""

RETURN = r"""
access_token:
  description: The token. Register the result on a task with no_log.
  type: str
  returned: success
expiry:
  description: UTC expiry, ISO 8601.
  type: str
  returned: success
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import google.auth
    import google.auth.compute_engine
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    HAS_GOOGLE_AUTH = True
    GOOGLE_AUTH_IMPORT_ERROR = None
except ImportError:
    HAS_GOOGLE_AUTH = False
    GOOGLE_AUTH_IMPORT_ERROR = traceback.format_exc()


def _credentials(params):
    kind = params["auth_kind"]
    scopes = params["scopes"]
    if kind == "serviceaccount":
        return service_account.Credentials.from_service_account_file(params["service_account_file"], scopes=scopes)
    if kind == "application":
        credentials, _project = google.auth.default(scopes=scopes)
        return credentials
    return google.auth.compute_engine.Credentials(service_account_email=params["service_account_email"] or "default")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            auth_kind=dict(type="str", required=True, choices=["serviceaccount", "application", "machineaccount"]),
            service_account_file=dict(type="path"),
            service_account_email=dict(type="str"),
            scopes=dict(type="list", elements="str", default=["https://www.googleapis.com/auth/cloud-platform"]),
        ),
        required_if=[("auth_kind", "serviceaccount", ["service_account_file"])],
        supports_check_mode=True,
    )
    if not HAS_GOOGLE_AUTH:
        module.fail_json(msg=missing_required_lib("google-auth"), exception=GOOGLE_AUTH_IMPORT_ERROR)
    try:
        credentials = _credentials(module.params)
        credentials.refresh(Request())
    except Exception as exc:  # google-auth raises several unrelated types; report them all plainly.
        module.fail_json(msg="could not obtain a Google access token with auth_kind={}: {}".format(module.params["auth_kind"], exc))
    expiry = credentials.expiry.isoformat() + "Z" if credentials.expiry else None
    module.exit_json(changed=False, access_token=credentials.token, expiry=expiry)


if __name__ == "__main__":
    main()
