#!/usr/bin/env python3
"""A stand-in for HashiCorp Vault's HTTP API, Python standard library only.

Written from the public API docs (developer.hashicorp.com/vault/api-docs): the parts dso and the
official client (hvac) use, with Vault's JSON shapes and status codes.

  KV v2   GET/POST/PUT/DELETE /v1/<mount>/data/<path>[?version=N]   (data.data, data.metadata)
          GET/DELETE          /v1/<mount>/metadata/<path>           (current_version, versions)
          LIST or GET ?list=true /v1/<mount>/metadata/<prefix>
  KV v1   GET/POST/PUT/DELETE /v1/<mount>/<path>, LIST
  tokens  X-Vault-Token (or Authorization: Bearer); policies with path globs ("*" suffix, "+"
          segment) and capabilities; GET /v1/auth/token/lookup-self, POST renew-self (with a max
          TTL), POST /v1/auth/token/create (root)
  AppRole POST /v1/auth/<mount>/login {role_id, secret_id}; role, role-id, secret-id (root)
  sys     GET /v1/sys/health, PUT /v1/sys/policy/<name> (HCL subset or JSON), POST
          /v1/sys/mounts/<path>, POST /v1/sys/auth/<path> (root)
  namespaces  X-Vault-Namespace selects a separate set of mounts and secrets
  errors  {"errors": [...]}: 403 ["permission denied"], 404 [], 400, 405, 500

Usage: vault_fake.py [--cert PEM --key PEM | --http] [--client-ca PEM] [--seed JSON]
                     [--root-token T] [--slow SECONDS] [--fail500 N] [--reset N]
Prints the port on stdout once listening on 127.0.0.1 (plain http only with --http).

Seed JSON (all optional):
  {"mounts": {"secret": 2, "kv": 1},
   "secrets": {"secret": {"app/db": [{"password": "v1"}, {"password": "v2"}]},   # v2: versions
               "kv": {"legacy": {"k": "v"}}},                                    # v1: one dict
   "policies": {"app": "path \\"secret/data/app/*\\" { capabilities = [\\"read\\"] }"},
   "tokens": {"s.apptoken": {"policies": ["app"], "ttl": 3600, "renewable": true}},
   "approles": {"web": {"role_id": "r", "secret_id": "s", "policies": ["app"], "ttl": 60}},
   "namespaces": {"team-a": {"mounts": {...}, "secrets": {...}}}}

Fault injection, for tests (also settable at runtime, no token needed, loopback only):
  POST /_fake/faults {"slow": seconds, "fail500": n, "reset": n, "midbody": n,
                     "only": "<path prefix>"}
  (reset: RST before answering; midbody: the answer's status, headers and half its body, then RST)
  GET  /_fake/stats  -> {"requests": n, "by_path": {...}, "logins": n, "renewals": n}
"""

import argparse
import fnmatch
import json
import re
import secrets as pysecrets
import socket
import ssl
import struct
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit, unquote


def now_iso(t=None):
    t = datetime.now(timezone.utc) if t is None else t
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class VaultError(Exception):
    def __init__(self, status, errors):
        super().__init__(status)
        self.status = status
        self.errors = errors


def denied():
    return VaultError(403, ["permission denied"])


class Namespace:
    def __init__(self):
        self.mounts = {}  # name -> kv version
        self.kv1 = {}  # (mount, path) -> dict
        self.kv2 = {}  # (mount, path) -> {"versions": {n: {...}}, "current": n, ...}


def parse_policy(text):
    """Vault policy text (HCL subset or its JSON form) -> [(pattern, {capabilities})]."""
    rules = []
    text = text.strip()
    if text.startswith("{"):
        doc = json.loads(text)
        for pattern, body in doc.get("path", {}).items():
            rules.append((pattern, set(body.get("capabilities", []))))
        return rules
    for m in re.finditer(
        r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', text
    ):
        caps = set(re.findall(r'"([^"]+)"', m.group(2)))
        rules.append((m.group(1), caps))
    return rules


def path_matches(pattern, path):
    segs_p = pattern.split("/")
    if "+" in segs_p:
        segs = path.split("/")
        out = []
        for i, s in enumerate(segs_p):
            if s == "+" and i < len(segs):
                out.append(segs[i])
            else:
                out.append(s)
        pattern = "/".join(out)
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


class State:
    def __init__(self, seed, root_token):
        self.lock = threading.Lock()
        self.namespaces = {"": Namespace()}
        self.policies = {}
        self.tokens = {}
        self.approles = {}  # mount -> {role_name: {...}}
        self.auth_mounts = {"token": "token", "approle": "approle"}
        self.faults = {"slow": 0.0, "fail500": 0, "reset": 0, "midbody": 0, "only": ""}
        self.stats = {"requests": 0, "by_path": {}, "logins": 0, "renewals": 0}
        self.add_token(root_token, ["root"], ttl=0, renewable=False)
        self.namespaces[""].mounts.update({"secret": 2})
        self.load(seed)

    def load(self, seed):
        for name, text in seed.get("policies", {}).items():
            self.policies[name] = parse_policy(text)
        for tok, spec in seed.get("tokens", {}).items():
            self.add_token(
                tok,
                spec.get("policies", ["default"]),
                spec.get("ttl", 3600),
                spec.get("renewable", True),
                spec.get("max_ttl", 0),
            )
        for role, spec in seed.get("approles", {}).items():
            self.approles.setdefault(spec.get("mount", "approle"), {})[role] = {
                "role_id": spec.get("role_id", pysecrets.token_hex(16)),
                "secret_ids": {spec["secret_id"]} if spec.get("secret_id") else set(),
                "bind_secret_id": spec.get("bind_secret_id", True),
                "policies": spec.get("policies", ["default"]),
                "ttl": spec.get("ttl", 3600),
                "max_ttl": spec.get("max_ttl", 0),
            }
        self.load_ns("", seed)
        for ns, nseed in seed.get("namespaces", {}).items():
            self.namespaces.setdefault(ns.strip("/"), Namespace())
            self.load_ns(ns.strip("/"), nseed)

    def load_ns(self, ns, seed):
        n = self.namespaces[ns]
        for mount, version in seed.get("mounts", {}).items():
            n.mounts[mount] = int(version)
        for mount, paths in seed.get("secrets", {}).items():
            n.mounts.setdefault(mount, 2)
            for path, data in paths.items():
                if n.mounts[mount] == 1:
                    n.kv1[(mount, path)] = data
                else:
                    for d in data if isinstance(data, list) else [data]:
                        self.kv2_write(n, mount, path, d)

    def add_token(self, token, policies, ttl, renewable=True, max_ttl=0):
        t = time.time()
        self.tokens[token] = {
            "policies": sorted(set(policies) | ({"default"} if "root" not in policies else set())),
            "ttl": ttl,
            "issue": t,
            "expire": t + ttl if ttl else None,
            "max_expire": t + (max_ttl or 32 * 24 * 3600) if ttl else None,
            "renewable": renewable and bool(ttl),
            "accessor": pysecrets.token_hex(12),
        }
        return self.tokens[token]

    def token_info(self, token):
        info = self.tokens.get(token)
        if info is None:
            return None
        if info["expire"] is not None and time.time() >= info["expire"]:
            del self.tokens[token]
            return None
        return info

    def allowed(self, info, path, cap):
        if "root" in info["policies"]:
            return True
        for pol in info["policies"]:
            for pattern, caps in self.policies.get(pol, []):
                if path_matches(pattern, path) and (cap in caps or "sudo" in caps):
                    if "deny" in caps:
                        return False
                    return True
        return False

    def kv2_write(self, n, mount, path, data, cas=None):
        entry = n.kv2.setdefault(
            (mount, path),
            {"versions": {}, "current": 0, "created": now_iso(), "oldest": 0},
        )
        if cas is not None and cas != entry["current"]:
            raise VaultError(
                400, ["check-and-set parameter did not match the current version"]
            )
        entry["current"] += 1
        v = entry["current"]
        entry["versions"][v] = {
            "data": data,
            "created_time": now_iso(),
            "deletion_time": "",
            "destroyed": False,
        }
        entry["updated"] = now_iso()
        return v, entry["versions"][v]


def auth_block(token, info, metadata=None):
    return {
        "client_token": token,
        "accessor": info["accessor"],
        "policies": info["policies"],
        "token_policies": info["policies"],
        "metadata": metadata,
        "lease_duration": int(info["ttl"]),
        "renewable": info["renewable"],
        "entity_id": "",
        "token_type": "service",
        "orphan": True,
        "mfa_requirement": None,
        "num_uses": 0,
    }


def envelope(data=None, auth=None, warnings=None):
    return {
        "request_id": pysecrets.token_hex(16),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": auth,
        "mount_type": "",
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vault-fake"

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- plumbing -----------------------------------------------------------------------------

    def send_json(self, status, body):
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if getattr(self, "_cut_midbody", False):
            self._cut_midbody = False
            self.wfile.write(raw[: len(raw) // 2])
            self.wfile.flush()
            # Let the client read the status, headers and half body before the RST (a RST
            # that arrives first makes the kernel drop what the client has not read yet).
            time.sleep(0.3)
            self.reset_connection()
            return
        self.wfile.write(raw)

    def read_body(self):
        # Always consume the body, even when the request is refused before looking at it, so
        # the next request on this keep-alive connection starts where it should.
        n = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(n) if n else b""

    def body_json(self):
        raw = self._body
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise VaultError(400, ["failed to parse JSON input"])

    def token(self):
        tok = self.headers.get("X-Vault-Token")
        if not tok:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                tok = auth[len("Bearer ") :]
        return tok

    def require_token(self):
        st = self.server.state
        tok = self.token()
        info = st.token_info(tok) if tok else None
        if info is None:
            raise denied()
        return tok, info

    def check(self, info, ns_path, cap):
        if not self.server.state.allowed(info, ns_path, cap):
            raise denied()

    def namespace(self):
        ns = (self.headers.get("X-Vault-Namespace") or "").strip("/")
        n = self.server.state.namespaces.get(ns)
        if n is None:
            # Vault answers an unknown namespace as a missing route.
            raise VaultError(404, [])
        return n

    def fault(self, path):
        st = self.server.state
        with st.lock:
            st.stats["requests"] += 1
            st.stats["by_path"][path] = st.stats["by_path"].get(path, 0) + 1
            f = dict(st.faults)
            applies = path.startswith("/v1/") and path.startswith(f["only"] or "/v1/")
            if applies and f["reset"] > 0:
                st.faults["reset"] -= 1
                action = "reset"
            elif applies and f.get("midbody", 0) > 0:
                st.faults["midbody"] -= 1
                action = "midbody"
            elif applies and f["fail500"] > 0:
                st.faults["fail500"] -= 1
                action = "500"
            else:
                action = None
        if applies and f["slow"] > 0:
            time.sleep(f["slow"])
        if action == "reset":
            self.reset_connection()
            return True
        if action == "500":
            self.send_json(500, {"errors": ["internal error"]})
            return True
        if action == "midbody":
            # Answer for real, but cut the connection halfway through the body (send_json).
            self._cut_midbody = True
        return False

    def reset_connection(self):
        """RST instead of FIN: SO_LINGER 0, then close the raw socket."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            # detach() takes the fd away from the file objects still referring to it.
            socket.socket(fileno=self.connection.detach()).close()
        except OSError:
            pass

    def handle_method(self, method):
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        self.read_body()
        try:
            if path.startswith("/_fake/"):
                return self.admin(method, path)
            if self.fault(path):
                return
            if not path.startswith("/v1/"):
                raise VaultError(404, [])
            rel = unquote(path[len("/v1/") :])
            if method == "GET" and query.get("list") == ["true"]:
                method = "LIST"
            with self.server.state.lock:
                status, body = self.route(method, rel, query)
            self.send_json(status, body)
        except VaultError as e:
            self.send_json(e.status, {"errors": e.errors})
        except (ConnectionError, ssl.SSLError):
            self.close_connection = True

    def do_GET(self):
        self.handle_method("GET")

    def do_POST(self):
        self.handle_method("POST")

    def do_PUT(self):
        self.handle_method("PUT")

    def do_DELETE(self):
        self.handle_method("DELETE")

    def do_LIST(self):
        self.handle_method("LIST")

    def do_PATCH(self):
        self.handle_method("PATCH")

    # -- admin --------------------------------------------------------------------------------

    def admin(self, method, path):
        st = self.server.state
        if path == "/_fake/faults" and method == "POST":
            body = self.body_json()
            with st.lock:
                for k in ("slow", "fail500", "reset", "midbody", "only"):
                    if k in body:
                        st.faults[k] = body[k]
            return self.send_json(200, st.faults)
        if path == "/_fake/stats":
            with st.lock:
                return self.send_json(200, st.stats)
        if path == "/_fake/seed" and method == "POST":
            body = self.body_json()
            with st.lock:
                st.load(body)
            return self.send_json(204, None)
        raise VaultError(404, [])

    # -- API ----------------------------------------------------------------------------------

    def route(self, method, rel, query):
        st = self.server.state
        if rel == "sys/health":
            return 200, {
                "initialized": True,
                "sealed": False,
                "standby": False,
                "performance_standby": False,
                "replication_performance_mode": "disabled",
                "replication_dr_mode": "disabled",
                "server_time_utc": int(time.time()),
                "version": "1.15.0-fake",
                "cluster_name": "vault-fake",
                "cluster_id": "00000000-0000-0000-0000-000000000000",
            }
        if rel.startswith("auth/"):
            return self.route_auth(method, rel[len("auth/") :])
        if rel.startswith("sys/"):
            return self.route_sys(method, rel[len("sys/") :])
        tok, info = self.require_token()
        n = self.namespace()
        mount, _, rest = rel.partition("/")
        # Nested mounts: longest mount name that prefixes the path.
        for m in sorted(n.mounts, key=len, reverse=True):
            if rel == m or rel.startswith(m + "/"):
                mount, rest = m, rel[len(m) + 1 :]
                break
        else:
            # ACLs are checked before routing: 403 unless the token could read here.
            self.check(info, rel, "read")
            raise VaultError(404, ['no handler for route "%s"' % rel])
        if n.mounts[mount] == 1:
            return self.kv1(method, n, info, mount, rest, rel)
        return self.kv2(method, n, info, mount, rest, rel, query)

    def kv1(self, method, n, info, mount, path, rel):
        if method == "GET":
            self.check(info, rel, "read")
            data = n.kv1.get((mount, path))
            if data is None:
                raise VaultError(404, [])
            body = envelope(data)
            body["lease_duration"] = 2764800
            return 200, body
        if method in ("POST", "PUT"):
            self.check(info, rel, "create" if (mount, path) not in n.kv1 else "update")
            data = self.body_json()
            n.kv1[(mount, path)] = data
            return 204, None
        if method == "DELETE":
            self.check(info, rel, "delete")
            n.kv1.pop((mount, path), None)
            return 204, None
        if method == "LIST":
            self.check(info, rel, "list")
            return self.list_keys([p for (m, p) in n.kv1 if m == mount], path)
        raise VaultError(405, ["1 error occurred:\n\t* unsupported operation\n\n"])

    def list_keys(self, paths, prefix):
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        keys = set()
        for p in paths:
            if p.startswith(prefix):
                rest = p[len(prefix) :]
                head, sep, _ = rest.partition("/")
                keys.add(head + sep)
        if not keys:
            raise VaultError(404, [])
        return 200, envelope({"keys": sorted(keys)})

    def kv2(self, method, n, info, mount, rest, rel, query):
        kind, _, path = rest.partition("/")
        if kind == "data":
            entry = n.kv2.get((mount, path))
            if method == "GET":
                self.check(info, rel, "read")
                if entry is None:
                    raise VaultError(404, [])
                v = int(query.get("version", ["0"])[0] or 0) or entry["current"]
                ver = entry["versions"].get(v)
                if ver is None:
                    raise VaultError(404, [])
                meta = {
                    "created_time": ver["created_time"],
                    "custom_metadata": None,
                    "deletion_time": ver["deletion_time"],
                    "destroyed": ver["destroyed"],
                    "version": v,
                }
                if ver["deletion_time"] or ver["destroyed"]:
                    # Vault: 404 with the metadata of the deleted version and no data.
                    return 404, envelope({"data": None, "metadata": meta})
                return 200, envelope({"data": ver["data"], "metadata": meta})
            if method in ("POST", "PUT"):
                self.check(info, rel, "create" if entry is None else "update")
                body = self.body_json()
                if not isinstance(body.get("data"), dict):
                    raise VaultError(400, ["no data provided"])
                cas = (body.get("options") or {}).get("cas")
                v, ver = self.server.state.kv2_write(n, mount, path, body["data"], cas)
                return 200, envelope(
                    {
                        "created_time": ver["created_time"],
                        "custom_metadata": None,
                        "deletion_time": "",
                        "destroyed": False,
                        "version": v,
                    }
                )
            if method == "DELETE":
                self.check(info, rel, "delete")
                if entry is not None and entry["current"] in entry["versions"]:
                    entry["versions"][entry["current"]]["deletion_time"] = now_iso()
                return 204, None
        elif kind == "metadata":
            entry = n.kv2.get((mount, path))
            if method == "LIST":
                self.check(info, rel, "list")
                return self.list_keys([p for (m, p) in n.kv2 if m == mount], path)
            if method == "GET":
                self.check(info, rel, "read")
                if entry is None:
                    raise VaultError(404, [])
                return 200, envelope(
                    {
                        "cas_required": False,
                        "created_time": entry["created"],
                        "current_version": entry["current"],
                        "custom_metadata": None,
                        "delete_version_after": "0s",
                        "max_versions": 0,
                        "oldest_version": entry["oldest"],
                        "updated_time": entry["updated"],
                        "versions": {
                            str(k): {
                                "created_time": v["created_time"],
                                "deletion_time": v["deletion_time"],
                                "destroyed": v["destroyed"],
                            }
                            for k, v in entry["versions"].items()
                        },
                    }
                )
            if method == "DELETE":
                self.check(info, rel, "delete")
                n.kv2.pop((mount, path), None)
                return 204, None
        raise VaultError(405, ["1 error occurred:\n\t* unsupported operation\n\n"])

    def route_auth(self, method, rel):
        st = self.server.state
        if rel == "token/lookup-self" and method == "GET":
            tok, info = self.require_token()
            return 200, envelope(self.lookup_data(tok, info))
        if rel == "token/renew-self" and method in ("POST", "PUT"):
            tok, info = self.require_token()
            st.stats["renewals"] += 1
            if not info["renewable"]:
                raise VaultError(400, ["lease is not renewable"])
            body = self.body_json()
            inc = parse_ttl(body.get("increment")) or info["ttl"]
            t = time.time()
            new_expire = min(t + inc, info["max_expire"])
            info["expire"] = new_expire
            info["ttl"] = max(0, int(new_expire - t))
            return 200, envelope(auth=auth_block(tok, info))
        if rel == "token/create" and method in ("POST", "PUT"):
            tok, info = self.require_token()
            if "root" not in info["policies"]:
                raise denied()
            body = self.body_json()
            new = body.get("id") or "hvs." + pysecrets.token_urlsafe(24)
            ninfo = st.add_token(
                new,
                body.get("policies") or ["default"],
                parse_ttl(body.get("ttl")) or 2764800,
                body.get("renewable", True),
                parse_ttl(body.get("explicit_max_ttl")) or 0,
            )
            return 200, envelope(auth=auth_block(new, ninfo))
        mount, _, rest = rel.partition("/")
        roles = st.approles.get(mount)
        if roles is not None or st.auth_mounts.get(mount) == "approle":
            roles = st.approles.setdefault(mount, {})
            return self.approle(method, roles, rest)
        raise VaultError(404, ['no handler for route "auth/%s"' % rel])

    def lookup_data(self, tok, info):
        t = time.time()
        return {
            "accessor": info["accessor"],
            "creation_time": int(info["issue"]),
            "creation_ttl": int(info["ttl"]),
            "display_name": "token",
            "entity_id": "",
            "expire_time": None
            if info["expire"] is None
            else now_iso(datetime.fromtimestamp(info["expire"], timezone.utc)),
            "explicit_max_ttl": 0,
            "id": tok,
            "issue_time": now_iso(datetime.fromtimestamp(info["issue"], timezone.utc)),
            "meta": None,
            "num_uses": 0,
            "orphan": True,
            "path": "auth/token/create",
            "policies": info["policies"],
            "renewable": info["renewable"],
            "ttl": 0 if info["expire"] is None else max(0, int(info["expire"] - t)),
            "type": "service",
        }

    def approle(self, method, roles, rest):
        st = self.server.state
        if rest == "login" and method in ("POST", "PUT"):
            body = self.body_json()
            role_id = body.get("role_id")
            if not role_id:
                raise VaultError(400, ["missing role_id"])
            for name, role in roles.items():
                if role["role_id"] == role_id:
                    if role["bind_secret_id"] and body.get("secret_id") not in role["secret_ids"]:
                        break
                    st.stats["logins"] += 1
                    tok = "hvs." + pysecrets.token_urlsafe(24)
                    info = st.add_token(
                        tok, role["policies"], role["ttl"], True, role["max_ttl"]
                    )
                    return 200, envelope(
                        auth=auth_block(tok, info, {"role_name": name})
                    )
            raise VaultError(400, ["invalid role or secret ID"])
        tok, info = self.require_token()
        if "root" not in info["policies"]:
            raise denied()
        m = re.fullmatch(r"role/([^/]+)(?:/(role-id|secret-id))?", rest)
        if not m:
            if rest == "role" and method == "LIST":
                return 200, envelope({"keys": sorted(roles)})
            raise VaultError(404, [])
        name, sub = m.group(1), m.group(2)
        if sub is None:
            if method in ("POST", "PUT"):
                body = self.body_json()
                role = roles.setdefault(
                    name,
                    {
                        "role_id": str(__import__("uuid").uuid4()),
                        "secret_ids": set(),
                        "bind_secret_id": True,
                        "policies": ["default"],
                        "ttl": 3600,
                        "max_ttl": 0,
                    },
                )
                pol = body.get("token_policies", body.get("policies"))
                if isinstance(pol, str):
                    pol = [p.strip() for p in pol.split(",") if p.strip()]
                if pol is not None:
                    role["policies"] = pol
                if "token_ttl" in body:
                    role["ttl"] = parse_ttl(body["token_ttl"])
                if "token_max_ttl" in body:
                    role["max_ttl"] = parse_ttl(body["token_max_ttl"])
                if "bind_secret_id" in body:
                    role["bind_secret_id"] = bool(body["bind_secret_id"])
                return 204, None
            if method == "GET":
                role = roles.get(name)
                if role is None:
                    raise VaultError(404, [])
                return 200, envelope(
                    {
                        "bind_secret_id": role["bind_secret_id"],
                        "token_policies": role["policies"],
                        "token_ttl": role["ttl"],
                        "token_max_ttl": role["max_ttl"],
                    }
                )
            if method == "DELETE":
                roles.pop(name, None)
                return 204, None
        role = roles.get(name)
        if role is None:
            raise VaultError(400, ['role "%s" does not exist' % name])
        if sub == "role-id" and method == "GET":
            return 200, envelope({"role_id": role["role_id"]})
        if sub == "role-id" and method in ("POST", "PUT"):
            role["role_id"] = self.body_json().get("role_id", role["role_id"])
            return 204, None
        if sub == "secret-id" and method in ("POST", "PUT"):
            sid = str(__import__("uuid").uuid4())
            role["secret_ids"].add(sid)
            return 200, envelope(
                {
                    "secret_id": sid,
                    "secret_id_accessor": str(__import__("uuid").uuid4()),
                    "secret_id_num_uses": 0,
                    "secret_id_ttl": 0,
                }
            )
        raise VaultError(405, ["1 error occurred:\n\t* unsupported operation\n\n"])

    def route_sys(self, method, rel):
        st = self.server.state
        tok, info = self.require_token()
        if "root" not in info["policies"]:
            raise denied()
        m = re.fullmatch(r"(?:policy|policies/acl)/([^/]+)", rel)
        if m:
            name = m.group(1)
            if method in ("POST", "PUT"):
                body = self.body_json()
                st.policies[name] = parse_policy(body.get("policy", ""))
                return 204, None
            if method == "GET":
                if name not in st.policies:
                    raise VaultError(404, [])
                return 200, envelope({"name": name})
            if method == "DELETE":
                st.policies.pop(name, None)
                return 204, None
        m = re.fullmatch(r"namespaces/(.+)", rel)
        if m and method in ("POST", "PUT"):
            name = m.group(1).strip("/")
            if name not in st.namespaces:
                st.namespaces[name] = Namespace()
                st.namespaces[name].mounts["secret"] = 2
            return 200, envelope({"id": pysecrets.token_hex(3), "path": name + "/"})
        m = re.fullmatch(r"mounts/(.+)", rel)
        if m and method in ("POST", "PUT"):
            body = self.body_json()
            version = int(((body.get("options") or {}).get("version")) or 1)
            if body.get("type") == "kv-v2":
                version = 2
            n = self.namespace()
            if m.group(1).strip("/") in n.mounts:
                raise VaultError(400, ["path is already in use at %s/" % m.group(1)])
            n.mounts[m.group(1).strip("/")] = version
            return 204, None
        m = re.fullmatch(r"auth/(.+)", rel)
        if m and method in ("POST", "PUT"):
            body = self.body_json()
            st.auth_mounts[m.group(1).strip("/")] = body.get("type", "approle")
            st.approles.setdefault(m.group(1).strip("/"), {})
            return 204, None
        if rel == "mounts" and method == "GET":
            n = self.namespace()
            return 200, envelope(
                {
                    m + "/": {"type": "kv", "options": {"version": str(v)}}
                    for m, v in n.mounts.items()
                }
            )
        raise VaultError(404, ['no handler for route "sys/%s"' % rel])


def parse_ttl(v):
    if v is None or v == "":
        return 0
    if isinstance(v, (int, float)):
        return int(v)
    m = re.fullmatch(r"(\d+)([smhd]?)", str(v).strip())
    if not m:
        raise VaultError(400, ["invalid duration %r" % v])
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state, tls_ctx):
        super().__init__(addr, Handler)
        self.state = state
        self.tls_ctx = tls_ctx

    def finish_request(self, request, client_address):
        # TLS handshake in the request's thread, so a slow or failing client blocks nobody.
        if self.tls_ctx is not None:
            try:
                request.settimeout(30)
                request = self.tls_ctx.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca", help="require client certificates signed by this CA")
    ap.add_argument("--http", action="store_true", help="plain http (loopback)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed")
    ap.add_argument("--root-token", default="root")
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--fail500", type=int, default=0)
    ap.add_argument("--reset", type=int, default=0)
    a = ap.parse_args()

    seed = {}
    if a.seed:
        with open(a.seed, encoding="utf-8") as f:
            seed = json.load(f)
    state = State(seed, a.root_token)
    state.faults.update({"slow": a.slow, "fail500": a.fail500, "reset": a.reset})

    ctx = None
    if not a.http:
        if not (a.cert and a.key):
            ap.error("--cert and --key are required unless --http")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(a.cert, a.key)
        if a.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.client_ca)
    srv = Server(("127.0.0.1", a.port), state, ctx)
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
