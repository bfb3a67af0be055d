#!/usr/bin/env python3
"""The shape of the code under src/: the longest functions and the module import graph.

    scripts/code-shape.py functions [N]   the N longest non-test functions (default 15)
    scripts/code-shape.py imports         module -> modules it uses, and any cycle
    scripts/code-shape.py check           exit 1 on an import cycle or a function in
                                          src/controller/ over 80 lines

A reading aid for reviews (issue 18's before/after), not a parser: it counts lines from a `fn`
to its closing brace, skipping strings, chars and comments, and leaves out `#[cfg(test)]` modules.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")
CONTROLLER_LIMIT = 80


def files():
    for root, _, names in os.walk(SRC):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(root, n)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return "::".join(["crate"] + rel)


def code_only(text):
    """The text with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        m = re.match(r'r(#*)"', text[i:i + 10])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
            continue
        if c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def test_ranges(lines):
    """Line ranges of `#[cfg(test)]` items (modules, functions)."""
    ranges, i = [], 0
    while i < len(lines):
        if lines[i].strip().startswith("#[cfg(test)]"):
            end = block_end(lines, i)
            ranges.append((i, end))
            i = end + 1
        else:
            i += 1
    return ranges


def block_end(lines, start):
    depth, opened = 0, False
    for j in range(start, len(lines)):
        for ch in lines[j]:
            if ch == "{":
                depth, opened = depth + 1, True
            elif ch == "}":
                depth -= 1
        if opened and depth <= 0:
            return j
        if not opened and lines[j].rstrip().endswith(";") and j > start:
            return j
    return len(lines) - 1


def functions():
    found = []
    for path in files():
        with open(path) as f:
            lines = code_only(f.read()).split("\n")
        tests = test_ranges(lines)
        for i, line in enumerate(lines):
            m = FN.match(line)
            if not m or any(a <= i <= b for a, b in tests):
                continue
            end = block_end(lines, i)
            if lines[end].rstrip().endswith(";") and "{" not in "".join(lines[i:end + 1]):
                continue  # a trait method without a body
            rel = os.path.relpath(path, os.path.join(SRC, ".."))
            found.append((end - i + 1, f"{rel}:{i + 1}", m.group(1)))
    return sorted(found, key=lambda t: (-t[0], t[1]))


def imports():
    modules = {module_of(p): p for p in files()}
    graph = {}
    for mod, path in modules.items():
        with open(path) as f:
            text = code_only(f.read())
        lines = text.split("\n")
        for a, b in test_ranges(lines):
            for k in range(a, b + 1):
                lines[k] = ""
        text = "\n".join(lines)
        # `super` is the parent module (of a mod.rs: its own parent).
        parent = mod.rsplit("::", 1)[0]
        text = re.sub(r"\bsuper::", parent + "::", text)
        uses = set()
        for m in re.finditer(r"\bcrate((?:::\w+)+)", text):
            parts = ["crate"] + m.group(1).strip(":").split("::")
            for k in range(len(parts), 1, -1):
                cand = "::".join(parts[:k])
                if cand in modules:
                    break
            else:
                continue
            if cand != mod and not mod.startswith(cand + "::"):
                uses.add(cand)
        # `use super::{a, b}` / `super::{...}` groups.
        for m in re.finditer(r"\b" + re.escape(parent) + r"::\{([^}]*)\}", text):
            for name in re.findall(r"\b(\w+)\b", m.group(1)):
                cand = parent + "::" + name
                if cand in modules and cand != mod:
                    uses.add(cand)
        graph[mod] = uses
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "functions"
    if cmd == "functions":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
        for length, where, name in functions()[:n]:
            print(f"{length:5}  {name:32} {where}")
    elif cmd == "imports":
        graph = imports()
        for mod in sorted(graph):
            print(f"{mod} -> {', '.join(sorted(graph[mod])) or '-'}")
        found = cycles(graph)
        print("cycles:", "; ".join(" <-> ".join(c) for c in found) if found else "none")
    elif cmd == "check":
        bad = [c for c in cycles(imports())]
        long = [f for f in functions() if f[1].startswith("src/controller/") and f[0] > CONTROLLER_LIMIT]
        for c in bad:
            print("import cycle:", " <-> ".join(c))
        for length, where, name in long:
            print(f"{where} {name} is {length} lines (controller/ limit {CONTROLLER_LIMIT})")
        sys.exit(1 if bad or long else 0)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
