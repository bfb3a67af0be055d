"""Small AWS helper for the demo, using boto3 against the local AWS emulator (AWS_ENDPOINT_URL)."""
import json
import os
import sys
import urllib.request
import uuid

import boto3

sm = boto3.client("secretsmanager")
cmd, name = sys.argv[1], sys.argv[2]


def pending(value_password):
    """A rotation function's createSecret step: the new value as AWSPENDING. Returns (token, current)."""
    current = sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    value = json.loads(current["SecretString"])
    value["password"] = value_password
    token = str(uuid.uuid4())
    sm.put_secret_value(SecretId=name, SecretString=json.dumps(value), ClientRequestToken=token, VersionStages=["AWSPENDING"])
    return token, current


if cmd == "create":
    value = json.loads(sys.argv[3])
    print(sm.create_secret(Name=name, SecretString=json.dumps(value))["VersionId"])
elif cmd == "rotate":
    # As a rotation Lambda does: createSecret (AWSPENDING), then finishSecret (move AWSCURRENT).
    token, current = pending(sys.argv[3])
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current["VersionId"])
    print(token)
elif cmd == "start-rotation":
    # A rotation whose function fails after createSecret: AWSPENDING stays, finishSecret never runs.
    token, _ = pending(sys.argv[3])
    print(token)
elif cmd == "queue":
    # An SQS queue and the EventBridge rule that sends it Secrets Manager's "Secret Label Updated"
    # events (the local AWS emulator delivers them as EventBridge does).
    url = boto3.client("sqs").create_queue(QueueName=name)["QueueUrl"]
    rule = json.dumps({"queue_url": url}).encode()
    urllib.request.urlopen(urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + "/__eventbridge", data=rule, method="POST")).read()
    print(url)
