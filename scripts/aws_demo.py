"""Small AWS helper for the demo, using boto3 against the local AWS emulator (AWS_ENDPOINT_URL)."""
import json
import sys
import uuid

import boto3

sm = boto3.client("secretsmanager")
cmd, name = sys.argv[1], sys.argv[2]
if cmd == "create":
    value = json.loads(sys.argv[3])
    print(sm.create_secret(Name=name, SecretString=json.dumps(value))["VersionId"])
elif cmd == "rotate":
    # As a rotation Lambda does: createSecret (AWSPENDING), then finishSecret (move AWSCURRENT).
    current = sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    value = json.loads(current["SecretString"])
    value["password"] = sys.argv[3]
    token = str(uuid.uuid4())
    sm.put_secret_value(SecretId=name, SecretString=json.dumps(value), ClientRequestToken=token, VersionStages=["AWSPENDING"])
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current["VersionId"])
    print(token)
