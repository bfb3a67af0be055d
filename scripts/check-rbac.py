#!/usr/bin/env python3
"""The README's RBAC table against what the operator actually did in the e2e suite.

Every e2e test runs the operator as the chart's ServiceAccount on an API server that enforces
RBAC; when a test ends, the runner keeps the emulator's audit of that ServiceAccount's requests
(tests/support/rbac.rs) in DIR/<operator namespace>.json (one per installation). This checks, over all of them:
  - no request by the operator was refused (a missing grant would be a 403 in production);
  - every request is covered by a row of the table (nothing used that is undocumented);
  - every row is used by some request (nothing granted that is never used), except the rows the
    API server checks on its own (admission) and never sees as a request.

Usage: check-rbac.py README.md DIR
"""
import json
import re
import sys
from pathlib import Path

# Requests every signed-in user may make (the bootstrap ClusterRoles system:basic-user and
# system:discovery), which the chart therefore does not grant.
BASIC_USER = {("create", "authorization.k8s.io", "selfsubjectaccessreviews")}
DISCOVERY = re.compile(r"^/(api|apis|openapi|version|healthz|livez|readyz)(/.*)?$")
NOT_REQUESTED = "never requested by the operator"
MIN_TESTS = 20


def table(readme: str):
    text = Path(readme).read_text()
    body = text.split("<!-- rbac-table:", 1)[1].split("<!-- /rbac-table -->", 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("`"):
            continue
        verbs, group, resource, scope, _only, why = cells
        group = "" if group.startswith('`""`') else group.strip("`")
        for verb in verbs.strip("`").split(", "):
            rows.append({
                "verb": verb,
                "group": group,
                "resource": resource.strip("`"),
                "scope": "cluster" if scope.startswith("cluster") else
                         "watched" if scope.startswith("watched") else "operator",
                "admission": NOT_REQUESTED in why,
                "line": line.strip(),
            })
    if not rows:
        sys.exit(f"{readme}: no RBAC table between the rbac-table markers")
    return rows


def covers(row, req, operator_namespace):
    if (row["verb"], row["group"], row["resource"]) != (req["verb"], req["group"], req["resource"]):
        return False
    # A cluster-scoped request needs a cluster row, or a watched-namespaces row (all namespaces,
    # as the chart's ClusterRole grants it); one in the operator's own namespace an operator or
    # lease namespace row; one in the tenant namespace a watched-namespaces row.
    if req["namespace"] == "":
        return row["scope"] in ("cluster", "watched")
    if req["namespace"] == operator_namespace:
        return row["scope"] == "operator"
    return row["scope"] == "watched"


def covering(rows, req, operator_namespace):
    """The rows that cover a request: those of its own scope; failing those, a cluster row (a
    ClusterRole's rule also covers a namespaced request, e.g. another installation's Lease)."""
    hits = [i for i, r in enumerate(rows) if covers(r, req, operator_namespace)]
    if hits or req["namespace"] == "":
        return hits
    return [i for i, r in enumerate(rows) if r["scope"] == "cluster" and
            (r["verb"], r["group"], r["resource"]) == (req["verb"], req["group"], req["resource"])]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = table(sys.argv[1])
    files = sorted(Path(sys.argv[2]).glob("*.json"))
    if len(files) < MIN_TESTS:
        sys.exit(f"check-rbac: only {len(files)} e2e audits in {sys.argv[2]}; run the e2e suite first (make unit)")
    problems, used = [], set()
    for f in files:
        audit = json.loads(f.read_text())
        for req in audit["requests"]:
            what = f'{req["verb"]} {req["resource"]}' + (f'.{req["group"]}' if req["group"] else "") + \
                (f' in {req["namespace"]}' if req["namespace"] else " (cluster-wide)")
            if not req["allowed"]:
                problems.append(f"{f.name}: refused: {what} ({req['count']}x)")
                continue
            if req["resource"].startswith("/"):
                if not DISCOVERY.match(req["resource"]):
                    problems.append(f"{f.name}: non-resource request not in the table: {req['verb']} {req['resource']}")
                continue
            if (req["verb"], req["group"], req["resource"]) in BASIC_USER:
                continue
            hits = covering(rows, req, audit.get("operator_namespace"))
            if not hits:
                problems.append(f"{f.name}: not in the README's table: {what}")
            used.update(hits)
    for i, r in enumerate(rows):
        if i not in used and not r["admission"]:
            problems.append(f"granted but never requested in the e2e suite: {r['verb']} on {r['line']}")
    if problems:
        print("check-rbac: the RBAC table and what the operator does disagree:")
        for p in sorted(set(problems)):
            print("  " + p)
        sys.exit(1)
    print(f"check-rbac: {len(rows)} verb rows, all used and none exceeded, over {len(files)} e2e tests")


if __name__ == "__main__":
    main()
