#!/usr/bin/env python3
"""The release workflow and what points at it agree: the chart's default image is the image the
workflow pushes, at the chart's appVersion (= the Cargo package version, = the tag the workflow
requires), and the OCI chart reference in the READMEs is where the workflow pushes the chart."""
import re
import sys
from pathlib import Path

import yaml

root = Path(__file__).resolve().parents[1]
workflow = yaml.safe_load((root / ".github/workflows/release.yml").read_text())
env = workflow["env"]
values = yaml.safe_load((root / "charts/managed-secrets/values.yaml").read_text())
chart = yaml.safe_load((root / "charts/managed-secrets/Chart.yaml").read_text())
cargo = re.search(r'^version = "([^"]+)"', (root / "Cargo.toml").read_text(), re.M).group(1)
problems = []
if values["image"]["repository"] != env["IMAGE"]:
    problems.append(f"values.yaml image.repository {values['image']['repository']} != release.yml IMAGE {env['IMAGE']}")
if values["image"]["tag"] not in ("", None):
    problems.append("values.yaml image.tag must stay empty (the chart's appVersion is the released tag)")
if str(chart["appVersion"]) != cargo:
    problems.append(f"Chart.yaml appVersion {chart['appVersion']} != Cargo.toml version {cargo}")
chart_ref = env["CHART_REPO"] + "/managed-secrets"
for readme in ("README.md", "charts/managed-secrets/README.md"):
    text = (root / readme).read_text()
    refs = set(re.findall(r"oci://[\w./-]+", text))
    if refs != {chart_ref}:
        problems.append(f"{readme}: OCI chart references {sorted(refs)} != {chart_ref}")
    images = set(re.findall(r"ghcr\.io/[\w./-]+:[\w.]+", text))
    for image in images:
        if not image.startswith(env["IMAGE"] + ":"):
            problems.append(f"{readme}: image {image} is not {env['IMAGE']}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"check-release: image {env['IMAGE']}:{cargo} and chart {chart_ref} agree")
