#!/usr/bin/env python3
"""Reads `helm template` output on stdin and checks that the CRDs it renders equal the files in the
directory given (crds/), apart from what the chart adds: its labels and the keep annotation."""
import sys
from pathlib import Path

import yaml

want = {}
for p in sorted(Path(sys.argv[1]).glob("*.yaml")):
    crd = yaml.safe_load(p.read_text())
    want[crd["metadata"]["name"]] = crd
got = {}
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc.get("kind") == "CustomResourceDefinition":
        meta = doc["metadata"]
        for k in list(meta.get("labels", {})):
            if k.startswith(("app.kubernetes.io/", "helm.sh/")):
                del meta["labels"][k]
        if not meta.get("labels"):
            meta.pop("labels", None)
        meta.get("annotations", {}).pop("helm.sh/resource-policy", None)
        if not meta.get("annotations"):
            meta.pop("annotations", None)
        got[meta["name"]] = doc
problems = []
if sorted(got) != sorted(want):
    problems.append(f"the chart renders CRDs {sorted(got)}, crds/ has {sorted(want)}")
for name in sorted(set(got) & set(want)):
    if got[name] != want[name]:
        problems.append(f"{name}: the chart's rendered CRD differs from crds/ (run 'make crds')")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"check-chart-crds: {len(got)} CRDs rendered by the chart equal crds/")
