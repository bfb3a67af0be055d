"""Starts moto (the AWS emulator) in server mode on 127.0.0.1 for managed-secrets' tests and demo.

Prints `listening on http://127.0.0.1:PORT` as its first line, then serves until SIGTERM/SIGINT.

It corrects one gap of moto 5.2.5 so that tests model real AWS: after UpdateSecretVersionStage moves
AWSCURRENT to another version, moto keeps answering GetSecretValue without a VersionStage (and
BatchGetSecretValue, and DescribeSecret's default version) with the old version, because it never
updates the secret's default version. Real Secrets Manager answers with the new AWSCURRENT.
tests/aws_emulator.rs proves the correction.

It also does what AWS does around moto that moto does not:
- EventBridge: Secrets Manager sends `Secret Label Updated` to the default event bus when a staging
  label moves to another version (every label but AWSPENDING and AWSPREVIOUS). `POST /__eventbridge
  {"queue_url": URL, "region": "us-east-1", "sns": false}` adds a rule whose target is that SQS
  queue (moto's, in this process), the event delivered as EventBridge delivers it (the event JSON as
  the body, or wrapped in an SNS notification with "sns": true); `DELETE /__eventbridge` removes
  every rule.
- Rotation metadata: when a rotation finishes (AWSCURRENT moves to the version that carried
  AWSPENDING), LastRotatedDate becomes now and, with rotation enabled, NextRotationDate now plus the
  rotation period (on or before the end of that UTC day: NextRotationDate is the latest time the
  rotation happens, the end of its window). `POST /__rotation {"secret_id": ID, "region": R,
  "next_rotation_date": UNIX, "duration": "1h"}` enables rotation and moves NextRotationDate (time
  passing: a schedule coming due), with that window length (RotationRules.Duration) if given.
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

import uuid

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.secretsmanager.models import FakeSecret, SecretsManagerBackend, secretsmanager_backends
from moto.sqs.models import sqs_backends
from werkzeug.serving import make_server

_original_update_stage = SecretsManagerBackend.update_secret_version_stage
_original_put_value = SecretsManagerBackend.put_secret_value

# EventBridge rules whose target is an SQS queue: {"account", "region", "queue", "sns"}.
_rules = []
_rules_lock = threading.Lock()
UNANNOUNCED = ("AWSPENDING", "AWSPREVIOUS")


def _label_updated(backend, secret, label, version_id):
    """Delivers `Secret Label Updated` to every rule's queue, as EventBridge does."""
    if label in UNANNOUNCED:
        return
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Secret Label Updated",
        "source": "aws.secretsmanager",
        "account": backend.account_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": backend.region_name,
        "resources": [secret.arn],
        "detail": {"name": secret.name, "labelUpdated": label, "versionId": version_id},
    }
    body = json.dumps(event)
    with _rules_lock:
        # The default event bus is regional: a rule sees its own account's and region's events.
        rules = [r for r in _rules if r["account"] == backend.account_id and r["region"] == backend.region_name]
    for r in rules:
        message = body
        if r["sns"]:
            message = json.dumps({
                "Type": "Notification",
                "MessageId": str(uuid.uuid4()),
                "TopicArn": f"arn:aws:sns:{r['region']}:{r['account']}:secrets-manager-events",
                "Message": body,
                "Timestamp": event["time"],
            })
        try:
            sqs_backends[r["account"]][r["region"]].send_message(r["queue"], message)
        except Exception as e:  # EventBridge retries, then drops; the API call itself succeeded
            print(f"eventbridge: could not deliver to {r['queue']}: {e}", file=sys.stderr, flush=True)


def _update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
    secret = self.secrets[secret_id] if secret_id in self.secrets else None
    finishing = (
        version_stage == "AWSCURRENT"
        and move_to_version_id
        and secret is not None
        and move_to_version_id in secret.versions
        and "AWSPENDING" in secret.versions[move_to_version_id]["version_stages"]
    )
    result = _original_update_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
    secret = self.secrets[secret_id]
    if version_stage == "AWSCURRENT" and move_to_version_id:
        if hasattr(secret, "set_default_version_id"):
            secret.set_default_version_id(move_to_version_id)
    if finishing:
        # A rotation's finishSecret: AWS records it and schedules the next one, on or before the
        # end of the UTC day the rotation period ends.
        now = int(time.time())
        secret.last_rotation_date = now
        if secret.rotation_enabled and secret.auto_rotate_after_days:
            due = now + int(secret.auto_rotate_after_days) * 86400
            secret.next_rotation_date = due - due % 86400 + 86399
    if move_to_version_id:
        _label_updated(self, secret, version_stage, move_to_version_id)
    return result


def _put_secret_value(self, secret_id, secret_string, secret_binary, client_request_token, version_stages):
    secret = self.secrets[secret_id] if secret_id in self.secrets else None
    repeated = secret is not None and client_request_token in secret.versions
    result = _original_put_value(self, secret_id, secret_string, secret_binary, client_request_token, version_stages)
    if repeated:
        return result  # the same request again (idempotent): nothing moved
    answer = json.loads(result)
    for label in answer.get("VersionStages") or []:
        _label_updated(self, self.secrets[secret_id], label, answer.get("VersionId", ""))
    return result


_original_to_dict = FakeSecret.to_dict


def _to_dict(self):
    """DescribeSecret and ListSecrets with the rotation window (RotationRules.Duration) when set."""
    d = _original_to_dict(self)
    window = getattr(self, "rotation_window", None)
    if window and "RotationRules" in d:
        d["RotationRules"]["Duration"] = window
    return d


FakeSecret.to_dict = _to_dict
_original_update_secret = SecretsManagerBackend.update_secret


def _current_version(backend, secret_id):
    if secret_id not in backend.secrets:
        return None
    versions = backend.secrets[secret_id].versions
    return next((v for v, d in versions.items() if "AWSCURRENT" in d["version_stages"]), None)


def _update_secret(self, secret_id, *args, **kwargs):
    """UpdateSecret with a new value moves AWSCURRENT to a new version, as PutSecretValue does."""
    before = _current_version(self, secret_id)
    result = _original_update_secret(self, secret_id, *args, **kwargs)
    after = _current_version(self, secret_id)
    if after and after != before:
        _label_updated(self, self.secrets[secret_id], "AWSCURRENT", after)
    return result


SecretsManagerBackend.update_secret_version_stage = _update_secret_version_stage
SecretsManagerBackend.put_secret_value = _put_secret_value
SecretsManagerBackend.update_secret = _update_secret


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

    @staticmethod
    def _json_body(environ):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return json.loads(environ["wsgi.input"].read(length) or b"{}")

    def _eventbridge(self, environ, start_response, method):
        if method == "DELETE":
            with _rules_lock:
                _rules.clear()
            return self._reply(start_response, 200, {"ok": True})
        rule = self._json_body(environ)
        # http://host:port/ACCOUNT/QUEUE
        parts = urllib.parse.urlparse(rule["queue_url"]).path.strip("/").split("/")
        with _rules_lock:
            _rules.append({
                "account": parts[0],
                "queue": parts[-1],
                "region": rule.get("region", "us-east-1"),
                "sns": bool(rule.get("sns", False)),
            })
        return self._reply(start_response, 200, {"ok": True})

    def _rotation(self, environ, start_response):
        req = self._json_body(environ)
        backend = secretsmanager_backends[req.get("account", "123456789012")][req.get("region", "us-east-1")]
        secret = backend.secrets[req["secret_id"]]
        secret.rotation_requested = True
        secret.rotation_enabled = True
        if not secret.auto_rotate_after_days:
            secret.auto_rotate_after_days = 30
        secret.next_rotation_date = int(req["next_rotation_date"])
        if req.get("duration"):
            secret.rotation_window = req["duration"]
        return self._reply(start_response, 200, {"ok": True})

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
        if path == "/__eventbridge":
            return self._eventbridge(environ, start_response, method)
        if path == "/__rotation" and method == "POST":
            return self._rotation(environ, start_response)
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
