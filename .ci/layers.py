#!/usr/bin/env python3
"""Checks the module layering that docs/architecture.md writes down: a module of the crate may
use only modules listed above it in LAYERS (its own submodules are its own business), so the
request's data flows one way and there are no import loops.

Reads `crate::<module>` paths in src/ (outside `#[cfg(test)]` modules and `tests.rs` files: a
test may reach anywhere). Prints each use that goes up the list, and exits 1 if there is one."""
import pathlib
import re
import sys

# Top to bottom; keep in step with docs/architecture.md and src/lib.rs.
LAYERS = """
lib worker config audit metrics directory identity tls framing path route clinical policy limit
reject admit forward body state gateway proxy admin console server pki demo cli main
""".split()

src = pathlib.Path(__file__).resolve().parent.parent / "src"
rank = {m: i for i, m in enumerate(LAYERS)}
problems = []
for f in sorted(src.rglob("*.rs")):
    rel = f.relative_to(src)
    if f.name == "tests.rs":
        continue
    module = rel.parts[0].removesuffix(".rs")
    if module not in rank:
        problems.append(f"{rel}: module `{module}` is not in the layer list")
        continue
    text = f.read_text()
    # Test modules may use anything: cut from `#[cfg(test)] mod tests {` to the end.
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//.*", "", text)
    used = set(re.findall(r"\bcrate::([a-z_0-9]+)", text))
    # `use crate::{a, b::c}` groups.
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        used |= set(re.findall(r"(?:^|,)\s*([a-z_0-9]+)", group))
    for u in sorted(used):
        if u == module or u not in rank:
            continue  # the crate root's items (hex, BoxError) are lib's
        if rank[u] > rank[module]:
            problems.append(f"{rel}: `{module}` uses `crate::{u}`, which is below it")
for p in problems:
    print(p)
if problems:
    sys.exit(1)
print(f"layers: {len(LAYERS)} modules, every use goes down the list")
