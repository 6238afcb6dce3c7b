#!/usr/bin/env python3
"""The library's module dependencies, one line per module file, and the import loops among them.

A module depends on another when it names it (`crate::a::b`, `super::x`). A child naming one of
its ancestors (the parent that declares it) and a parent naming its own children are not
counted: that is how a module and its parts are built. Every other loop is reported, and with
--check the script exits 1 when there is one (scripts/test.sh runs it so).

    python3 scripts/module-deps.py [--list] [--check]
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def library_files():
    files = {}
    for d, _, names in os.walk(SRC):
        for n in names:
            if not n.endswith(".rs"):
                continue
            mod = module_of(os.path.join(d, n))
            # Tests, test helpers and the CLI binary are not the library.
            if "tests" in mod or mod[:1] in (("testutil",), ("cli",)):
                continue
            files[mod] = os.path.join(d, n)
    return files


def without_inline_tests(text):
    i = text.find("#[cfg(test)]\nmod tests {")
    return text if i < 0 else text[:i]


def dependencies(files):
    mods = set(files)

    def longest(parts):
        for k in range(len(parts), 0, -1):
            if tuple(parts[:k]) in mods:
                return tuple(parts[:k])
        return None

    edges = {}
    for mod, path in files.items():
        text = without_inline_tests(open(path, encoding="utf-8").read())
        refs = set()
        for m in re.finditer(r"crate((?:::[a-z_0-9]+)+)", text):
            refs.add(longest(m.group(1).split("::")[1:]))
        for m in re.finditer(r"\b((?:super::)+)((?:[a-z_0-9]+::)*[a-z_0-9]+)", text):
            base = list(mod[: len(mod) - m.group(1).count("super::")])
            refs.add(longest(base + m.group(2).split("::")))
        for r in refs - {None, mod}:
            if mod[: len(r)] == r or r[: len(mod)] == mod:
                continue
            edges.setdefault(mod, set()).add(r)
    return edges


def loops(edges):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted("::".join(c) for c in comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def main():
    edges = dependencies(library_files())
    if "--list" in sys.argv:
        for mod in sorted(edges, key="::".join):
            print(f"{'::'.join(mod)} -> {', '.join(sorted('::'.join(r) for r in edges[mod]))}")
    found = loops(edges)
    print("import loops:", "; ".join(" <-> ".join(c) for c in found) if found else "none")
    if found and "--check" in sys.argv:
        sys.exit(1)


if __name__ == "__main__":
    main()
