#!/usr/bin/env python3
"""Splits `managed-secrets crdgen` output (YAML documents separated by ---) into DIR, one file per
CRD named GROUP_PLURAL.yaml, as crds/ holds them. Standard library only."""
import re
import sys

out = sys.argv[1]
for doc in sys.stdin.read().split("---\n"):
    if not doc.strip():
        continue
    name = re.search(r"^  name: (\S+)$", doc, re.M).group(1)  # metadata.name: PLURAL.GROUP
    plural, group = name.split(".", 1)
    with open(f"{out}/{group}_{plural}.yaml", "w") as f:
        f.write(doc)
