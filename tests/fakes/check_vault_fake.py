#!/usr/bin/env python3
"""Checks vault_fake.py against the official Vault client, hvac: if hvac can use the fake for
everything dso relies on (KV v1/v2, versions, metadata, policies, token and AppRole auth,
renewal, namespaces, error shapes), the fake speaks Vault's protocol.

Usage: check_vault_fake.py --ca CA.pem --cert SERVER.pem --key SERVER.key
Starts the fake over HTTPS (verified against CA.pem), runs the checks, exits 0 when all pass.
"""

import argparse
import os
import subprocess
import sys

import hvac
import hvac.exceptions
import requests

HERE = os.path.dirname(os.path.abspath(__file__))


def expect_raise(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError("expected %s from %s" % (exc.__name__, fn.__name__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args()

    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "vault_fake.py"), "--cert", a.cert, "--key", a.key,
         "--root-token", "root-check"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())
        run_checks("https://localhost:%d" % port, a.ca)
    finally:
        proc.kill()
        proc.wait()
    print("vault fake: all hvac checks passed")


def run_checks(url, ca):
    root = hvac.Client(url=url, token="root-check", verify=ca)
    assert root.is_authenticated()
    health = root.sys.read_health_status(method="GET")
    assert health["initialized"] and not health["sealed"], health

    # KV v2: write two versions, read latest, pinned, metadata, list.
    kv2 = root.secrets.kv.v2
    w = kv2.create_or_update_secret(path="app/db", secret={"password": "p1", "user": "u"})
    assert w["data"]["version"] == 1, w
    kv2.create_or_update_secret(path="app/db", secret={"password": "p2", "user": "u"})
    r = kv2.read_secret_version(path="app/db", raise_on_deleted_version=True)
    assert r["data"]["data"] == {"password": "p2", "user": "u"}, r
    assert r["data"]["metadata"]["version"] == 2, r
    r1 = kv2.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True)
    assert r1["data"]["data"]["password"] == "p1", r1
    meta = kv2.read_secret_metadata(path="app/db")
    assert meta["data"]["current_version"] == 2, meta
    assert set(meta["data"]["versions"]) == {"1", "2"}, meta
    keys = kv2.list_secrets(path="app")
    assert keys["data"]["keys"] == ["db"], keys
    expect_raise(hvac.exceptions.InvalidPath, kv2.read_secret_version, path="nope",
                 raise_on_deleted_version=True)
    # Soft delete: the latest version reads as missing, older ones stay.
    kv2.create_or_update_secret(path="app/tmp", secret={"x": "1"})
    kv2.delete_latest_version_of_secret(path="app/tmp")
    expect_raise(hvac.exceptions.InvalidPath, kv2.read_secret_version, path="app/tmp",
                 raise_on_deleted_version=True)
    # hvac's opt-in to reading deleted versions: the 404 body carries the metadata.
    deleted = kv2.read_secret_version(path="app/tmp", raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None and deleted["data"]["metadata"]["deletion_time"]

    # KV v1 on its own mount.
    root.sys.enable_secrets_engine(backend_type="kv", path="kv", options={"version": "1"})
    kv1 = root.secrets.kv.v1
    kv1.create_or_update_secret(path="legacy", secret={"k": "v"}, mount_point="kv")
    assert kv1.read_secret(path="legacy", mount_point="kv")["data"] == {"k": "v"}
    expect_raise(hvac.exceptions.InvalidPath, kv1.read_secret, path="gone", mount_point="kv")

    # Policies and a restricted token: allowed path readable, others 403 with Vault's errors.
    root.sys.create_or_update_policy(
        name="app", policy='path "secret/data/app/*" { capabilities = ["read"] }'
    )
    tok = root.auth.token.create(policies=["app"], ttl="1h", renewable=True)
    app_token = tok["auth"]["client_token"]
    assert tok["auth"]["lease_duration"] == 3600 and tok["auth"]["renewable"], tok
    app = hvac.Client(url=url, token=app_token, verify=ca)
    assert app.secrets.kv.v2.read_secret_version(
        path="app/db", raise_on_deleted_version=True)["data"]["data"]["password"] == "p2"
    kv2.create_or_update_secret(path="other/x", secret={"v": "1"})
    e = expect_raise(hvac.exceptions.Forbidden, app.secrets.kv.v2.read_secret_version,
                     path="other/x", raise_on_deleted_version=True)
    assert e.errors == ["permission denied"], e.errors
    bad = hvac.Client(url=url, token="not-a-token", verify=ca)
    assert not bad.is_authenticated()
    expect_raise(hvac.exceptions.Forbidden, bad.secrets.kv.v2.read_secret_version,
                 path="app/db", raise_on_deleted_version=True)
    # Error JSON exactly as Vault writes it.
    raw = requests.get(url + "/v1/secret/data/other/x", headers={"X-Vault-Token": app_token},
                       verify=ca)
    assert raw.status_code == 403 and raw.json() == {"errors": ["permission denied"]}, raw.text
    raw = requests.get(url + "/v1/secret/data/missing", headers={"X-Vault-Token": "root-check"},
                       verify=ca)
    assert raw.status_code == 404 and raw.json() == {"errors": []}, raw.text

    # Token lookup and renewal.
    look = app.auth.token.lookup_self()
    assert look["data"]["policies"] == ["app", "default"], look
    assert 3500 <= look["data"]["ttl"] <= 3600 and look["data"]["renewable"], look
    ren = app.auth.token.renew_self(increment="30m")
    assert ren["auth"]["client_token"] == app_token and ren["auth"]["lease_duration"] == 1800, ren
    # A root token (no TTL) is not renewable: 400.
    expect_raise(hvac.exceptions.InvalidRequest, root.auth.token.renew_self)

    # AppRole: enable, role, ids, login, refused login.
    root.sys.enable_auth_method(method_type="approle")
    root.auth.approle.create_or_update_approle(role_name="web", token_policies=["app"],
                                                token_ttl="1m")
    role_id = root.auth.approle.read_role_id(role_name="web")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role_name="web")["data"]["secret_id"]
    ar = hvac.Client(url=url, verify=ca)
    login = ar.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert login["auth"]["lease_duration"] == 60 and login["auth"]["renewable"], login
    assert login["auth"]["metadata"] == {"role_name": "web"}, login
    assert ar.is_authenticated()
    assert ar.secrets.kv.v2.read_secret_version(
        path="app/db", raise_on_deleted_version=True)["data"]["data"]["user"] == "u"
    e = expect_raise(hvac.exceptions.InvalidRequest, hvac.Client(url=url, verify=ca)
                     .auth.approle.login, role_id=role_id, secret_id="wrong")
    assert e.errors == ["invalid role or secret ID"], e.errors

    # Namespaces: X-Vault-Namespace selects separate secrets.
    root.sys.create_namespace(path="team-a")
    ns = hvac.Client(url=url, token="root-check", verify=ca, namespace="team-a")
    ns.secrets.kv.v2.create_or_update_secret(path="ns/only", secret={"v": "in-ns"})
    assert ns.secrets.kv.v2.read_secret_version(
        path="ns/only", raise_on_deleted_version=True)["data"]["data"] == {"v": "in-ns"}
    expect_raise(hvac.exceptions.InvalidPath, kv2.read_secret_version, path="ns/only",
                 raise_on_deleted_version=True)


if __name__ == "__main__":
    main()
