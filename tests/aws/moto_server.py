"""Starts moto (the AWS emulator) in server mode on 127.0.0.1 for managed-secrets' tests and demo.

Prints `listening on http://127.0.0.1:PORT` as its first line, then serves until SIGTERM/SIGINT.

It corrects one gap of moto 5.2.5 so that tests model real AWS: after UpdateSecretVersionStage moves
AWSCURRENT to another version, moto keeps answering GetSecretValue without a VersionStage (and
BatchGetSecretValue, and DescribeSecret's default version) with the old version, because it never
updates the secret's default version. Real Secrets Manager answers with the new AWSCURRENT.
tests/aws_emulator.rs proves the correction.
"""

import argparse
import base64
import io
import json
import re
import urllib.parse
import signal
import sys
import threading
import time
from collections import Counter

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.secretsmanager.models import SecretsManagerBackend
from werkzeug.serving import make_server

_original_update_stage = SecretsManagerBackend.update_secret_version_stage


def _update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
    result = _original_update_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
    if version_stage == "AWSCURRENT" and move_to_version_id:
        secret = self.secrets[secret_id]
        if hasattr(secret, "set_default_version_id"):
            secret.set_default_version_id(move_to_version_id)
    return result


SecretsManagerBackend.update_secret_version_stage = _update_secret_version_stage


class TestControl:
    """WSGI middleware for tests: counts calls per API action and injects AWS error responses.

    POST /__faults {"action": "GetSecretValue", "secret_id": "prod/db/x", "code": "ThrottlingException",
                    "status": 400, "count": 1}  -> the next matching calls answer that AWS error
    GET  /__calls -> {"GetSecretValue": 3, ...};  DELETE /__calls resets.
    GET  /__requests -> every call: action, secret_id (secret_ids for BatchGetSecretValue), time (unix seconds), the signing access key and region, and for
         STS the role, session name, external id, session tags and the web identity token's
         audience and subject.
    The SDK under test receives real HTTP error responses in the AWS JSON protocol.
    """

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.faults = []
        self.calls = Counter()
        self.requests = []

    @staticmethod
    def _describe(environ, action, secret_id, form):
        """What a test may ask of one call: who signed it, and for STS what was asked."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        m = re.search(r"Credential=([^/]+)/[^/]+/([^/]+)/", auth)
        entry = {"action": action, "secret_id": secret_id, "time": time.time(),
                 "access_key": m.group(1) if m else None, "region": m.group(2) if m else None}
        if form:
            entry["role_arn"] = form.get("RoleArn")
            entry["session_name"] = form.get("RoleSessionName")
            entry["external_id"] = form.get("ExternalId")
            tags = {}
            i = 1
            while f"Tags.member.{i}.Key" in form:
                tags[form[f"Tags.member.{i}.Key"]] = form.get(f"Tags.member.{i}.Value")
                i += 1
            entry["tags"] = tags
            token = form.get("WebIdentityToken")
            if token:
                # The claims of the JWT (never its signature): audience and subject.
                try:
                    payload = token.split(".")[1]
                    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                    entry["token_aud"] = claims.get("aud")
                    entry["token_sub"] = claims.get("sub")
                except (IndexError, ValueError):
                    entry["token_aud"] = None
        return entry

    def _reply(self, start_response, status, body):
        data = json.dumps(body).encode()
        start_response(f"{status} X", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))])
        return [data]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/__faults" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            fault = json.loads(environ["wsgi.input"].read(length) or b"{}")
            fault.setdefault("count", 1)
            with self.lock:
                self.faults.append(fault)
            return self._reply(start_response, 200, {"ok": True})
        if path == "/__faults" and method == "DELETE":
            with self.lock:
                self.faults.clear()
            return self._reply(start_response, 200, {"ok": True})
        if path == "/__calls":
            with self.lock:
                if method == "DELETE":
                    self.calls.clear()
                return self._reply(start_response, 200, dict(self.calls))
        if path == "/__requests":
            with self.lock:
                if method == "DELETE":
                    self.requests.clear()
                return self._reply(start_response, 200, list(self.requests))
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        action = target.split(".")[-1] if target else ""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        form = {}
        if not action and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            # STS speaks the query protocol: Action=AssumeRole&RoleArn=...
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}
            action = form.get("Action", "")
        if action:
            try:
                body = json.loads(raw or b"{}") if not form else {}
            except ValueError:
                body = {}
            secret_id = body.get("SecretId", "") if isinstance(body, dict) else ""
            with self.lock:
                self.calls[action] += 1
                entry = self._describe(environ, action, secret_id, form)
                if isinstance(body, dict) and isinstance(body.get("SecretIdList"), list):
                    entry["secret_ids"] = body["SecretIdList"]
                self.requests.append(entry)
                for f in self.faults:
                    if f["count"] > 0 and f.get("action", action) == action and f.get("secret_id", secret_id) == secret_id:
                        f["count"] -= 1
                        self.faults = [x for x in self.faults if x["count"] > 0]
                        return self._reply(start_response, f.get("status", 400), {"__type": f["code"], "message": f.get("message", f"injected {f['code']}")})
        return self.app(environ, start_response)


class Listener:
    """The HTTP listener, which tests can close and reopen on the same port while moto's state (the
    secrets, in this process's memory) stays: AWS unreachable, then back.

    Commands on stdin, one per line: `pause` (the port refuses connections), `resume`. EOF ends the
    process, so no server outlives a crashed test run.
    """

    def __init__(self, app, port):
        self.app = app
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.port = self.server.server_address[1]
        self._serve()

    def _serve(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pause(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def resume(self):
        if self.server is None:
            self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
            self._serve()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    args = parser.parse_args()
    app = TestControl(DomainDispatcherApplication(create_backend_app))
    listener = Listener(app, args.port)
    print(f"listening on http://127.0.0.1:{listener.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def commands():
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "pause":
                listener.pause()
            elif cmd == "resume":
                listener.resume()
            print(f"ok {cmd}", flush=True)
        done.set()

    threading.Thread(target=commands, daemon=True).start()
    done.wait()
    listener.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
