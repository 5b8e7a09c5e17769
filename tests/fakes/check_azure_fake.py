#!/usr/bin/env python3
"""Checks azure_fake.py against the official Azure SDK (azure-keyvault-secrets and
azure-identity): if SecretClient, ClientSecretCredential and ManagedIdentityCredential work
against the fake (challenge flow, tokens, versions, errors), the fake speaks Azure's protocol.

Usage: check_azure_fake.py --ca CA.pem --cert SERVER.pem --key SERVER.key
Starts the fake (HTTPS verified against CA.pem, plus plain http for IMDS), runs the checks,
exits 0 when all pass.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"
CLIENT_SECRET = "check-client-secret"
USER_MI = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args()

    seed = {
        "secrets": {"seeded": ["s1", "s2"], "denied-one": ["x"]},
        "clients": {CLIENT_ID: {"secret": CLIENT_SECRET, "tenant": TENANT}},
        "managed_identities": ["system", USER_MI],
        "deny": {CLIENT_ID: ["denied-one"]},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(seed, f)
        seed_path = f.name
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "azure_fake.py"), "--cert", a.cert, "--key", a.key,
         "--also-http", "--seed", seed_path, "--tenant", TENANT],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        https_port = int(proc.stdout.readline())
        http_port = int(proc.stdout.readline())
        # The SDK's transports (requests, msal) verify TLS against these.
        os.environ["REQUESTS_CA_BUNDLE"] = a.ca
        os.environ["SSL_CERT_FILE"] = a.ca
        os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:%d" % http_port
        run_checks("https://localhost:%d" % https_port, a.ca)
    finally:
        proc.kill()
        proc.wait()
        os.unlink(seed_path)
    print("azure fake: all azure-sdk checks passed")


def run_checks(url, ca):
    # The SDK logs the failures the checks provoke on purpose; keep the output to the verdict.
    logging.getLogger("azure").setLevel(logging.CRITICAL)
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )
    from azure.identity import ClientSecretCredential, ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    # Raw protocol: the challenge on an unauthenticated request, the error JSON.
    req = urllib.request.Request(url + "/secrets/seeded?api-version=7.4")
    import ssl

    ctx = ssl.create_default_context(cafile=ca)
    try:
        urllib.request.urlopen(req, context=ctx)
        raise AssertionError("unauthenticated request accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
        chal = e.headers["WWW-Authenticate"]
        assert chal.startswith("Bearer ") and 'resource="https://vault.azure.net"' in chal, chal
        assert 'authorization="' in chal and TENANT in chal, chal
        assert json.loads(e.read())["error"]["code"] == "Unauthorized"

    cred = ClientSecretCredential(
        TENANT, CLIENT_ID, CLIENT_SECRET, authority=url, disable_instance_discovery=True
    )
    tok = cred.get_token("https://vault.azure.net/.default")
    assert tok.token and tok.expires_on > 0

    client = SecretClient(vault_url=url, credential=cred, verify_challenge_resource=False)
    s = client.get_secret("seeded")
    assert s.value == "s2", s.value
    assert s.id.startswith(url + "/secrets/seeded/") and s.properties.version == s.id.rsplit("/", 1)[1]
    versions = [p.version for p in client.list_properties_of_secret_versions("seeded")]
    assert len(versions) == 2 and s.properties.version in versions, versions
    older = [v for v in versions if v != s.properties.version][0]
    assert client.get_secret("seeded", older).value == "s1"

    put = client.set_secret("made-by-sdk", '{"user":"u","password":"p"}', content_type="application/json")
    assert put.properties.version and put.properties.content_type == "application/json"
    got = client.get_secret("made-by-sdk")
    assert json.loads(got.value) == {"user": "u", "password": "p"}
    names = {p.name for p in client.list_properties_of_secrets()}
    assert {"seeded", "made-by-sdk"} <= names, names

    try:
        client.get_secret("missing-secret")
        raise AssertionError("missing secret found")
    except ResourceNotFoundError as e:
        assert e.error.code == "SecretNotFound", e.error
    try:
        client.get_secret("seeded", "0" * 32)
        raise AssertionError("missing version found")
    except ResourceNotFoundError as e:
        assert e.error.code == "SecretNotFound"
    try:
        client.get_secret("denied-one")
        raise AssertionError("denied secret returned")
    except HttpResponseError as e:
        assert e.status_code == 403 and e.error.code == "Forbidden", e

    bad = ClientSecretCredential(
        TENANT, CLIENT_ID, "wrong-secret", authority=url, disable_instance_discovery=True
    )
    try:
        SecretClient(vault_url=url, credential=bad, verify_challenge_resource=False).get_secret("seeded")
        raise AssertionError("wrong client secret accepted")
    except ClientAuthenticationError as e:
        assert "AADSTS7000215" in str(e), e

    # Managed identity over the IMDS endpoint (AZURE_POD_IDENTITY_AUTHORITY_HOST -> the fake).
    mi = ManagedIdentityCredential()
    assert mi.get_token("https://vault.azure.net/.default").token
    mi_client = SecretClient(vault_url=url, credential=mi, verify_challenge_resource=False)
    assert mi_client.get_secret("seeded").value == "s2"
    user_mi = ManagedIdentityCredential(client_id=USER_MI)
    assert SecretClient(vault_url=url, credential=user_mi,
                        verify_challenge_resource=False).get_secret("denied-one").value == "x"
    try:
        ManagedIdentityCredential(client_id="not-assigned").get_token("https://vault.azure.net/.default")
        raise AssertionError("unknown identity got a token")
    except Exception as e:  # CredentialUnavailableError: "No identity has been assigned"
        assert "identity" in str(e).lower(), e

    # IMDS requires the Metadata header.
    imds = os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"]
    try:
        urllib.request.urlopen(
            imds + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
        )
        raise AssertionError("IMDS answered without Metadata: true")
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code


if __name__ == "__main__":
    main()
