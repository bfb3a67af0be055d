#!/usr/bin/env python3
"""Writes the values table of charts/managed-secrets/README.md from values.yaml's `# --` comments.

    chart-docs.py CHART          rewrite the table between the markers in CHART/README.md
    chart-docs.py CHART --check  fail if the README is out of date, if a value has no `# --`
                                 description, or if values.yaml and values.schema.json disagree
"""
import json
import re
import sys
from pathlib import Path

import yaml

BEGIN = "<!-- values-table:begin (scripts/chart-docs.py writes this table) -->"
END = "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):(.*)$")


def documented(lines):
    """[(path, description)] in file order: each `# --` comment and the key right after it."""
    out, stack, desc = [], [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            desc = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and desc is not None:
            desc.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            if stripped:
                desc = None
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if desc is not None:
            out.append((".".join(k for _, k in stack), " ".join(desc)))
        desc = None
    return out


def lookup(tree, path):
    for part in path.split("."):
        tree = tree[part]
    return tree


def leaves(tree, prefix=""):
    """Paths of every value that is not a non-empty mapping."""
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def schema_at(schema, path):
    for part in path.split("."):
        props = schema.get("properties", {})
        if part not in props:
            return None
        schema = props[part]
    return schema


def table(chart):
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((chart / "values.schema.json").read_text())
    docs = documented(text.splitlines())
    problems = []
    paths = [p for p, _ in docs]
    for leaf in leaves(values):
        if not any(leaf == p or leaf.startswith(p + ".") for p in paths):
            problems.append(f"values.yaml: {leaf} has no '# --' description")
    for leaf in leaves(values):
        if schema_at(schema, leaf) is None and not any(
            leaf.startswith(p + ".") and schema_at(schema, p) is not None for p in paths
        ):
            problems.append(f"values.schema.json: {leaf} is not in the schema")
    for name in schema.get("properties", {}):
        if name != "global" and name not in values:
            problems.append(f"values.schema.json: {name} is not in values.yaml")
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, desc in docs:
        value = lookup(values, path)
        s = schema_at(schema, path) or {}
        typ = s.get("type", type(value).__name__)
        if isinstance(typ, list):
            typ = " or ".join(typ)
        default = json.dumps(value, separators=(",", ":"))
        rows.append(f"| `{path}` | {typ} | `{default}` | {desc.replace('|', '&#124;')} |")
    return "\n".join(rows), problems


def main():
    chart = Path(sys.argv[1])
    check = "--check" in sys.argv[2:]
    rows, problems = table(chart)
    readme = chart / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        problems.append(f"{readme}: the table markers are missing")
        new = text
    else:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{BEGIN}\n{rows}\n{END}{tail}"
    if check and new != text:
        problems.append(f"{readme}: the values table is out of date: run 'make chart-docs'")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    if not check:
        readme.write_text(new)


if __name__ == "__main__":
    main()
