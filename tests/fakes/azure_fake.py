#!/usr/bin/env python3
"""A stand-in for Azure Key Vault, the instance metadata (IMDS) token endpoint and the Microsoft
Entra (AAD) token endpoint, Python standard library only.

Written from the public REST docs (learn.microsoft.com: Key Vault REST API "Get Secret",
"Authentication, requests and responses"; "How to use managed identities ... to acquire an
access token"; "OAuth 2.0 client credentials flow"):

  Key Vault  GET  /secrets/{name}[/{version}]?api-version=...   -> SecretBundle {value, id, ...}
             PUT  /secrets/{name}?api-version=...  {value, contentType, tags}
             GET  /secrets/{name}/versions, GET /secrets          (paged lists, nextLink null)
             requests without a bearer token -> 401 with
               WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"
             a token for another audience, or expired -> 401 (same challenge);
             an identity without access -> 403 Forbidden;
             errors: {"error": {"code": "SecretNotFound", "message": ...}}
  IMDS       GET  /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...[&client_id=]
             header Metadata: true required (400 otherwise); expires_in etc. are strings
  Entra      POST /{tenant}/oauth2/v2.0/token  grant_type=client_credentials, client_id,
             client_secret, scope=<resource>/.default;  GET /{tenant}/v2.0/.well-known/openid-configuration
             errors: {"error": "invalid_client", "error_description": "AADSTS7000215: ...", ...}

Usage: azure_fake.py [--cert PEM --key PEM | --http] [--also-http] [--seed JSON]
                     [--tenant T] [--slow S] [--fail500 N] [--reset N] [--challenge-scope]
Prints the port on stdout once listening on 127.0.0.1; with --also-http a second line gives a
plain-http port (for IMDS, which is http by design) served by the same state.

Seed JSON (all optional):
  {"secrets": {"db-password": ["v1", "v2"],
               "cfg": [{"value": "{\\"a\\":1}", "contentType": "application/json", "version": "<32 hex>"}]},
   "clients": {"<client_id>": {"secret": "<client secret>", "tenant": "<tenant>"}},
   "managed_identities": ["system", "<client_id of a user-assigned identity>"],
   "deny": {"<identity>": ["secret-name", ...]}}
Identities are "system", a user-assigned identity's client id, or a service principal's client id.

Faults: --slow/--fail500/--reset, or POST /_fake/faults {"slow", "fail500", "reset", "only"}
("only": a path prefix, e.g. "/secrets/" or "/metadata/"); GET /_fake/stats for counters.
"""

import argparse
import json
import secrets as pysecrets
import socket
import ssl
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

KV_RESOURCE = "https://vault.azure.net"


class ApiError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def kv_error(status, code, message, inner=None):
    err = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return ApiError(status, {"error": err})


class State:
    def __init__(self, seed, tenant):
        self.lock = threading.Lock()
        self.tenant = tenant
        self.secrets = {}  # name -> [ {version, value, contentType, tags, created, updated} ]
        self.clients = {}
        self.managed = {"system"}
        self.deny = {}
        self.tokens = {}  # token -> {identity, audience, expires}
        self.faults = {"slow": 0.0, "fail500": 0, "reset": 0, "only": ""}
        self.stats = {"requests": 0, "by_path": {}, "tokens_issued": 0, "challenges": 0}
        self.challenge_scope = False
        self.load(seed)

    def load(self, seed):
        for name, versions in seed.get("secrets", {}).items():
            for v in versions:
                if isinstance(v, str):
                    v = {"value": v}
                self.set_secret(name, v["value"], v.get("contentType"), v.get("tags"), v.get("version"))
        self.clients.update(seed.get("clients", {}))
        self.managed.update(seed.get("managed_identities", []))
        for ident, names in seed.get("deny", {}).items():
            self.deny.setdefault(ident, set()).update(names)

    def set_secret(self, name, value, content_type=None, tags=None, version=None):
        now = int(time.time())
        entry = {
            "version": version or uuid.uuid4().hex,
            "value": value,
            "contentType": content_type,
            "tags": tags,
            "created": now,
            "updated": now,
        }
        self.secrets.setdefault(name, []).append(entry)
        return entry

    def issue(self, identity, resource, ttl=3600):
        tok = "eyJ0eXAiOiJKV1QifQ." + pysecrets.token_urlsafe(32) + ".fake"
        self.tokens[tok] = {
            "identity": identity,
            "audience": resource.rstrip("/"),
            "expires": time.time() + ttl,
        }
        self.stats["tokens_issued"] += 1
        return tok


def scope_to_resource(scope):
    s = scope.strip()
    for suffix in ("/.default", ".default"):
        if s.endswith(suffix):
            s = s[: -len(suffix)]
    return s.rstrip("/")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-fake"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, body, headers=None):
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def fault(self, path):
        st = self.server.state
        with st.lock:
            st.stats["requests"] += 1
            st.stats["by_path"][path] = st.stats["by_path"].get(path, 0) + 1
            f = dict(st.faults)
            applies = not path.startswith("/_fake/") and path.startswith(f["only"] or "/")
            action = None
            if applies and f["reset"] > 0:
                st.faults["reset"] -= 1
                action = "reset"
            elif applies and f["fail500"] > 0:
                st.faults["fail500"] -= 1
                action = "500"
        if applies and f["slow"] > 0:
            time.sleep(f["slow"])
        if action == "reset":
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.close_connection = True
            try:
                socket.socket(fileno=self.connection.detach()).close()
            except OSError:
                pass
            return True
        if action == "500":
            self.send_json(
                500, {"error": {"code": "InternalServerError", "message": "injected fault"}}
            )
            return True
        return False

    def handle_method(self, method):
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        n = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(n) if n else b""
        try:
            if path.startswith("/_fake/"):
                return self.admin(method, path)
            if self.fault(path):
                return
            with self.server.state.lock:
                status, body, headers = self.route(method, path, query)
            self.send_json(status, body, headers)
        except ApiError as e:
            self.send_json(e.status, e.body, e.headers)
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

    def admin(self, method, path):
        st = self.server.state
        if path == "/_fake/faults" and method == "POST":
            body = json.loads(self._body or b"{}")
            with st.lock:
                for k in ("slow", "fail500", "reset", "only"):
                    if k in body:
                        st.faults[k] = body[k]
            return self.send_json(200, st.faults)
        if path == "/_fake/stats":
            with st.lock:
                return self.send_json(200, st.stats)
        if path == "/_fake/seed" and method == "POST":
            with st.lock:
                st.load(json.loads(self._body or b"{}"))
            return self.send_json(204, None)
        raise ApiError(404, {"error": "not found"})

    def base_url(self):
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        return "%s://%s" % (scheme, self.headers.get("Host", "localhost"))

    def route(self, method, path, query):
        if path == "/metadata/identity/oauth2/token":
            return self.imds(method, query)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
            return self.aad_token(parts[0])
        if parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self.openid(parts[0])
        if parts and parts[0] == "secrets":
            return self.keyvault(method, parts[1:], query)
        raise ApiError(404, {"error": {"code": "NotFound", "message": "Not found"}})

    # -- IMDS -----------------------------------------------------------------------------------

    def imds(self, method, query):
        st = self.server.state
        if method != "GET":
            raise ApiError(405, {"error": "invalid_request", "error_description": "Method not allowed"})
        if self.headers.get("Metadata", "").lower() != "true":
            raise ApiError(
                400,
                {"error": "invalid_request", "error_description": "Required metadata header not specified"},
            )
        if query.get("api-version") != "2018-02-01":
            raise ApiError(
                400,
                {"error": "invalid_request", "error_description": "Invalid API version"},
            )
        resource = query.get("resource")
        if not resource:
            raise ApiError(
                400,
                {"error": "invalid_request", "error_description": "Required audience parameter not specified"},
            )
        ident = query.get("client_id") or query.get("msi_res_id") or "system"
        if ident not in st.managed:
            raise ApiError(
                400,
                {"error": "invalid_request", "error_description": "Identity not found"},
            )
        now = int(time.time())
        tok = st.issue(ident, resource, 86399)
        return 200, {
            "access_token": tok,
            "client_id": ident if ident != "system" else str(uuid.UUID(int=1)),
            "expires_in": "86399",
            "expires_on": str(now + 86399),
            "ext_expires_in": "86399",
            "not_before": str(now),
            "resource": resource,
            "token_type": "Bearer",
        }, None

    # -- Entra ID -------------------------------------------------------------------------------

    def openid(self, tenant):
        base = self.base_url()
        return 200, {
            "token_endpoint": "%s/%s/oauth2/v2.0/token" % (base, tenant),
            "authorization_endpoint": "%s/%s/oauth2/v2.0/authorize" % (base, tenant),
            "device_authorization_endpoint": "%s/%s/oauth2/v2.0/devicecode" % (base, tenant),
            "issuer": "%s/%s/v2.0" % (base, tenant),
            "jwks_uri": "%s/%s/discovery/v2.0/keys" % (base, tenant),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "NA",
        }, None

    def aad_error(self, status, error, code, description):
        return ApiError(
            status,
            {
                "error": error,
                "error_description": "AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s"
                % (code, description, uuid.uuid4(), uuid.uuid4(), time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())),
                "error_codes": [code],
                "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            },
        )

    def aad_token(self, tenant):
        st = self.server.state
        form = {k: v[0] for k, v in parse_qs(self._body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials":
            raise self.aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        cid = form.get("client_id", "")
        client = st.clients.get(cid)
        if client is None or client.get("tenant", st.tenant) != tenant:
            raise self.aad_error(
                400, "unauthorized_client", 700016,
                "Application with identifier '%s' was not found in the directory '%s'." % (cid, tenant),
            )
        if form.get("client_secret") != client["secret"]:
            raise self.aad_error(
                401, "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'." % cid,
            )
        scopes = form.get("scope", "").split()
        resources = [scope_to_resource(s) for s in scopes if s not in ("openid", "profile", "offline_access")]
        if len(resources) != 1:
            raise self.aad_error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.")
        tok = st.issue(cid, resources[0], 3599)
        return 200, {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": tok,
        }, None

    # -- Key Vault ------------------------------------------------------------------------------

    def challenge(self):
        st = self.server.state
        st.stats["challenges"] += 1
        authority = "https://login.microsoftonline.com/%s" % st.tenant
        if getattr(self.server, "authority", None):
            authority = "%s/%s" % (self.server.authority.rstrip("/"), st.tenant)
        if st.challenge_scope:
            value = 'Bearer authorization="%s", scope="%s/.default"' % (authority, KV_RESOURCE)
        else:
            value = 'Bearer authorization="%s", resource="%s"' % (authority, KV_RESOURCE)
        return {"WWW-Authenticate": value}

    def authenticate(self):
        st = self.server.state
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise ApiError(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                self.challenge(),
            )
        info = st.tokens.get(auth[len("Bearer ") :])
        if info is None or info["expires"] < time.time():
            raise ApiError(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10032: Invalid issuer or token expired."}},
                self.challenge(),
            )
        if info["audience"] != KV_RESOURCE:
            raise ApiError(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience. Expected %s, found: %s." % (KV_RESOURCE, info["audience"])}},
                self.challenge(),
            )
        return info["identity"]

    def bundle(self, name, e, with_value=True):
        b = {
            "id": "%s/secrets/%s/%s" % (self.base_url(), name, e["version"]),
            "attributes": {
                "enabled": True,
                "created": e["created"],
                "updated": e["updated"],
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": e["tags"] or {},
        }
        if e["contentType"]:
            b["contentType"] = e["contentType"]
        if with_value:
            b["value"] = e["value"]
        return b

    def keyvault(self, method, parts, query):
        st = self.server.state
        if not query.get("api-version"):
            raise kv_error(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        identity = self.authenticate()
        if not parts or parts == [""]:
            if method != "GET":
                raise kv_error(405, "BadParameter", "Method not allowed")
            return 200, {
                "value": [
                    {k: v for k, v in self.bundle(n, vs[-1], False).items() if k != "id"}
                    | {"id": "%s/secrets/%s" % (self.base_url(), n)}
                    for n, vs in sorted(st.secrets.items())
                ],
                "nextLink": None,
            }, None
        name = parts[0]
        if name in st.deny.get(identity, set()):
            raise kv_error(
                403, "Forbidden",
                "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                "ForbiddenByRbac",
            )
        versions = st.secrets.get(name)
        if method == "PUT" and len(parts) == 1:
            body = json.loads(self._body or b"{}")
            if "value" not in body:
                raise kv_error(400, "BadParameter", "Property value is required.")
            e = st.set_secret(name, body["value"], body.get("contentType"), body.get("tags"))
            return 200, self.bundle(name, e), None
        if method != "GET":
            raise kv_error(405, "BadParameter", "Method not allowed")
        if len(parts) == 2 and parts[1] == "versions":
            if not versions:
                raise kv_error(404, "SecretNotFound", "A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182" % name)
            return 200, {"value": [self.bundle(name, e, False) for e in versions], "nextLink": None}, None
        if len(parts) > 2:
            raise kv_error(404, "NotFound", "Not found")
        version = parts[1] if len(parts) == 2 and parts[1] else None
        entry = None
        if versions:
            if version is None:
                entry = versions[-1]
            else:
                entry = next((e for e in versions if e["version"] == version), None)
        if entry is None:
            label = name if version is None else "%s/%s" % (name, version)
            raise kv_error(
                404, "SecretNotFound",
                "A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182" % label,
            )
        return 200, self.bundle(name, entry), None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state, tls_ctx):
        super().__init__(addr, Handler)
        self.state = state
        self.tls_ctx = tls_ctx
        self.authority = None

    def finish_request(self, request, client_address):
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
    ap.add_argument("--http", action="store_true")
    ap.add_argument("--also-http", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed")
    ap.add_argument("--tenant", default="00000000-0000-0000-0000-00000000abcd")
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--fail500", type=int, default=0)
    ap.add_argument("--reset", type=int, default=0)
    ap.add_argument("--challenge-scope", action="store_true",
                    help='challenge with scope="..." instead of resource="..."')
    a = ap.parse_args()

    seed = {}
    if a.seed:
        with open(a.seed, encoding="utf-8") as f:
            seed = json.load(f)
    state = State(seed, a.tenant)
    state.faults.update({"slow": a.slow, "fail500": a.fail500, "reset": a.reset})
    state.challenge_scope = a.challenge_scope

    ctx = None
    if not a.http:
        if not (a.cert and a.key):
            ap.error("--cert and --key are required unless --http")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(a.cert, a.key)
    srv = Server(("127.0.0.1", a.port), state, ctx)
    scheme = "http" if ctx is None else "https"
    srv.authority = "%s://localhost:%d" % (scheme, srv.server_address[1])
    servers = [srv]
    if a.also_http and ctx is not None:
        plain = Server(("127.0.0.1", 0), state, None)
        plain.authority = srv.authority
        servers.append(plain)
    for s in servers:
        print(s.server_address[1], flush=True)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
