"""A signed-token stand-in for an OpenID Connect realm (Keycloak), on a loopback port, for servers with MONAI Label's
authentication on.

It serves what MONAI Label reads from Keycloak, the way Keycloak serves it:
- ``GET <realm>``: ``{"public_key": ...}`` (the RSA key MONAI Label fetches to check token signatures);
- ``GET <realm>/.well-known/openid-configuration``: the token endpoint's address;
- ``POST <realm>/protocol/openid-connect/token`` with ``grant_type=password``: a signed RS256 access token for a
  known user and password (401 otherwise), which MONAI Label's ``POST /auth/token`` passes on to the client.
Tests can also sign tokens directly (``token``), with another key, no signature or any lifetime.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Optional
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ADMIN, ANNOTATOR, USER = "monailabel-admin", "monailabel-annotator", "monailabel-user"
CLIENT_ID = "monailabel-app"


class Realm:
    def __init__(self, token_lifetime_s: int = 3600) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.token_lifetime_s = token_lifetime_s
        self.users: dict[str, tuple[str, tuple[str, ...]]] = {}  # name -> (password, roles)
        self.issued: list[str] = []  # user names, one per token issued at the token endpoint
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/.well-known/openid-configuration"):
                    return self._json(200, {"issuer": realm.uri, "token_endpoint": realm.token_endpoint})
                self._json(200, {"realm": "covid", "public_key": base64.b64encode(der).decode()})

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                name, password = form.get("username", [""])[0], form.get("password", [""])[0]
                known = realm.users.get(name)
                if (form.get("grant_type") != ["password"] or form.get("client_id") != [CLIENT_ID] or known is None
                        or known[0] != password):
                    return self._json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
                realm.issued.append(name)
                self._json(200, {"access_token": realm.token(*known[1], user=name,
                                                             expires_in=realm.token_lifetime_s),
                                 "token_type": "Bearer", "expires_in": realm.token_lifetime_s})

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}/realms/covid"
        self.token_endpoint = f"{self.uri}/protocol/openid-connect/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_user(self, name: str, password: str, *roles: str) -> None:
        self.users[name] = (password, roles)

    def token(self, *roles: str, key=None, algorithm: str = "RS256", expires_in: int = 3600,
              user: str = "radiologist") -> str:
        claims = {"preferred_username": user, "exp": int(time.time()) + expires_in,
                  "realm_access": {"roles": list(roles)}}
        return jwt.encode(claims, key if key is not None else self.key, algorithm=algorithm)

    def server_env(self) -> dict[str, str]:
        """What a MONAI Label server needs to check this realm's tokens."""
        return {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": self.uri,
                "MONAI_LABEL_AUTH_CLIENT_ID": CLIENT_ID}

    def stop(self) -> None:
        self.httpd.shutdown()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    realm = Realm()
    yield realm
    realm.stop()
