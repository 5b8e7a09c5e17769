#!/usr/bin/env python3
"""A small stand-in for the EC2 instance metadata service, IMDSv2 only (stdlib only).

Speaks the part of IMDS that dso uses, as documented by AWS
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html):

  PUT /latest/api/token                 header X-aws-ec2-metadata-token-ttl-seconds: 1..21600
                                        -> 200, the session token (text/plain); 400 without the TTL
  GET /latest/meta-data/iam/security-credentials/        -> the role name
  GET /latest/meta-data/iam/security-credentials/<role>  -> JSON: Code, LastUpdated, Type,
                                        AccessKeyId, SecretAccessKey, Token, Expiration
  GET /latest/meta-data/placement/region                 -> the region

Every GET needs X-aws-ec2-metadata-token with a token from the PUT that has not expired: a GET
without one (IMDSv1) or with a wrong one gets 401, as on an instance with IMDSv2 required.

Usage: imds_fake.py CONFIG_JSON   (prints "PORT <n>" on stdout once listening on 127.0.0.1)
CONFIG_JSON is read again on every credentials request, so a test can rotate the credentials:
  {"role": "dso-role", "region": "us-east-1", "access_key_id": "...", "secret_access_key": "...",
   "token": "...", "expiration": "2030-01-01T00:00:00Z", "no_role": false}
GET /_fake/stats (no token needed) returns counters as JSON, for the tests' assertions.
"""

import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDS_PREFIX = "/latest/meta-data/iam/security-credentials/"
MAX_TTL = 21600


class State:
    def __init__(self, config_path):
        self.config_path = config_path
        self.lock = threading.Lock()
        self.tokens = {}  # token -> expiry (monotonic)
        self.stats = {
            "token_puts": 0,
            "unauthorized": 0,
            "role_list_gets": 0,
            "credential_gets": 0,
            "region_gets": 0,
        }

    def config(self):
        with open(self.config_path, encoding="utf-8") as f:
            return json.load(f)

    def count(self, key):
        with self.lock:
            self.stats[key] += 1

    def new_token(self, ttl):
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.monotonic() + ttl
        return token

    def token_ok(self, token):
        if not token:
            return False
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and expiry > time.monotonic()


class Handler(BaseHTTPRequestHandler):
    server_version = "imds-fake"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep the test output quiet
        pass

    @property
    def state(self):
        return self.server.state

    def send(self, status, body, content_type="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != "/latest/api/token":
            return self.send(404, "Not Found")
        # IMDS refuses token requests that went through a proxy.
        if self.headers.get("X-Forwarded-For"):
            return self.send(403, "Forbidden")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        try:
            ttl = int(ttl)
        except (TypeError, ValueError):
            return self.send(400, "Bad Request")
        if not 1 <= ttl <= MAX_TTL:
            return self.send(400, "Bad Request")
        self.state.count("token_puts")
        token = self.state.new_token(ttl)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token.encode())

    def do_GET(self):
        if self.path == "/_fake/stats":
            with self.state.lock:
                body = json.dumps(self.state.stats)
            return self.send(200, body, "application/json")
        if not self.state.token_ok(self.headers.get("X-aws-ec2-metadata-token")):
            self.state.count("unauthorized")
            return self.send(401, "Unauthorized")
        cfg = self.state.config()
        if self.path == "/latest/meta-data/placement/region":
            self.state.count("region_gets")
            return self.send(200, cfg.get("region", "us-east-1"))
        if self.path in (CREDS_PREFIX, CREDS_PREFIX.rstrip("/")):
            self.state.count("role_list_gets")
            if cfg.get("no_role"):
                return self.send(404, "Not Found")
            return self.send(200, cfg["role"])
        if self.path.startswith(CREDS_PREFIX):
            role = self.path[len(CREDS_PREFIX):]
            if cfg.get("no_role") or role != cfg["role"]:
                return self.send(404, "Not Found")
            self.state.count("credential_gets")
            body = {
                "Code": "Success",
                "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "Type": "AWS-HMAC",
                "AccessKeyId": cfg["access_key_id"],
                "SecretAccessKey": cfg["secret_access_key"],
                "Token": cfg.get("token", ""),
                "Expiration": cfg["expiration"],
            }
            return self.send(200, json.dumps(body, indent=2), "text/plain")
        return self.send(404, "Not Found")


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: imds_fake.py CONFIG_JSON\n")
        return 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.state = State(sys.argv[1])
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
