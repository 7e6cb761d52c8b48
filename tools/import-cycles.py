#!/usr/bin/env python3
"""Fails when a crate's files import each other in a circle.

Data flows one way (ARCHITECTURE.md): within a crate, no file may reach,
through `use crate::…`, `super::…` or a `crate::…` path in its code, a file
that reaches it back. A module's `mod` declarations are not imports: a
child may use its parent, a parent declares its children.

    python3 tools/import-cycles.py [SRC_DIR ...]   # default: every crate's src

Prints each circle found and exits 1; prints the files checked and exits 0
otherwise.
"""
import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
COMMENT = re.compile(r"//[^\n]*")


def module_of(root: pathlib.Path, f: pathlib.Path) -> list[str]:
    """The module path of file `f` under the crate root `root`."""
    parts = list(f.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def file_of(root: pathlib.Path, files: dict, path: list[str]):
    """The file holding the longest prefix of the module path `path`."""
    for k in range(len(path), -1, -1):
        f = files.get(tuple(path[:k]))
        if f is not None:
            return f
    return None


def edges(root: pathlib.Path):
    files = {}
    for f in root.rglob("*.rs"):
        files[tuple(module_of(root, f))] = f
    graph = {f: set() for f in files.values()}
    for mod, f in files.items():
        text = COMMENT.sub("", f.read_text())
        here = list(mod)
        targets = []
        for m in USE_GROUP.finditer(text):
            base = m.group(2).split("::")[1:]
            for item in re.split(r"[,\s]+", m.group(3)):
                item = item.split("::")[0].strip("{} ")
                if item and item != "self":
                    targets.append((m.group(1), base + [item]))
                elif item == "self":
                    targets.append((m.group(1), base))
        for m in PATH.finditer(text):
            targets.append((m.group(1), m.group(2).split("::")[1:]))
        for kind, rest in targets:
            if kind == "crate":
                path = rest
            else:
                ups = 1
                while rest and rest[0] == "super":
                    ups, rest = ups + 1, rest[1:]
                path = here[: max(len(here) - ups, 0)] + rest
            target = file_of(root, files, path)
            if target is not None and target != f:
                graph[f].add(target)
    return graph


def cycles(graph):
    """Strongly connected components of more than one file."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    repo = pathlib.Path(__file__).resolve().parent.parent
    roots = [pathlib.Path(a) for a in sys.argv[1:]] or [repo / "src"] + sorted(
        p / "src" for p in (repo / "crates").iterdir() if (p / "src").is_dir()
    )
    found = 0
    checked = 0
    for root in roots:
        graph = edges(root)
        checked += len(graph)
        for comp in cycles(graph):
            found += 1
            names = sorted(str(f.relative_to(repo)) for f in comp)
            print(f"import circle in {root.relative_to(repo)}: " + " ⇄ ".join(names))
    if found:
        sys.exit(1)
    print(f"no import circles ({checked} files in {len(roots)} crates)")


if __name__ == "__main__":
    main()
