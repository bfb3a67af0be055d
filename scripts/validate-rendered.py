#!/usr/bin/env python3
"""Validates a rendered chart: built-in kinds with kubernetes-validate (strict, the given Kubernetes
version), and the project's own custom resources against the openAPIV3Schema of their CRD in crds/.

usage: validate-rendered.py K8S_VERSION FILE...
"""
import glob
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml

version, files = sys.argv[1], sys.argv[2:]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
schemas = {}
for path in glob.glob(os.path.join(root, "crds", "*.yaml")):
    crd = yaml.safe_load(open(path))
    for v in crd["spec"]["versions"]:
        schemas[(f'{crd["spec"]["group"]}/{v["name"]}', crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]

builtin, failures = [], 0
for f in files:
    for doc in yaml.safe_load_all(open(f)):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in schemas:
            errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(doc))
            for e in errors:
                print(f"{f}: {key[1]} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")
            failures += len(errors)
        else:
            builtin.append(doc)
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as out:
    yaml.safe_dump_all(builtin, out)
rc = subprocess.call([os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"),
                      "--strict", "--quiet", "-k", version, out.name])
os.unlink(out.name)
sys.exit(1 if failures or rc else 0)
