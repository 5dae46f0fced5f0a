#!/usr/bin/env python3
"""Check the workspace crate graph against the dependency policy of docs/architecture.md.

The policy lives in scripts/crate-graph.json and mirrors the crate table in docs/architecture.md ("may depend
on"). This script reads `cargo metadata --format-version 1 --no-deps` (or a saved copy given with
--metadata) and checks every dependency of a workspace package on another workspace package:

- normal and build dependencies must be in the crate's `allow` list;
- dev-dependencies may also name the policy's `dev_extra` crates, unless the crate opts out;
- nothing may depend on a `forbidden` crate (meridian-cli), in any kind of dependency;
- every workspace package must have a row in the policy, and every row a package;
- the crate table of docs/architecture.md has the same crates, and each "may depend on" cell is
  word for word the row's `design` text in the policy.

It also draws each crate's module graph from its sources (`use crate::...`, `super::...`,
`self::...` and paths to child modules, in the files under the crate's `src/`, comments, strings
and `#[cfg(test)]` modules left out; a `mod` line alone is containment, not an edge) and reports
every import circle between modules (strongly connected components). Circles fail the check in
the crates the policy lists under `module_circles.enforce`; elsewhere they are printed as
warnings, so enforcing one more crate is one edit of scripts/crate-graph.json.

Exit status: 0 when the graph follows the policy, 1 on violations (one line each), 2 when the
policy file itself is broken or cargo metadata cannot be read.

`--self-test` runs this script on doctored metadata, with and without violations, and fails if
the check does not notice them, so the check cannot silently rot. Standard library only.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
DEFAULT_POLICY = SCRIPT_DIR / "crate-graph.json"
DEFAULT_ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"

# The two rules docs/architecture.md states in words under its table. A policy file that breaks them is
# refused outright, whatever else it says.
ROOT_CRATE = "meridian-proto"
KIND_NAMES = {None: "normal", "normal": "normal", "build": "build", "dev": "dev"}


class PolicyError(Exception):
    """The policy file is missing, malformed or contradicts docs/architecture.md's stated rules."""


class Policy:
    def __init__(self, crates, dev_extra, forbidden, source, circles_enforced=frozenset()):
        self.crates = crates  # name -> {"allow": set, "dev_extra": bool, "design": str}
        self.dev_extra = dev_extra
        self.forbidden = forbidden
        self.source = source
        self.circles_enforced = circles_enforced  # crates in which a module circle is a violation

    def allowed(self, crate, kind):
        row = self.crates[crate]
        allowed = set(row["allow"])
        if kind == "dev" and row["dev_extra"]:
            allowed |= self.dev_extra
        return allowed - self.forbidden - {crate}


def load_policy(path):
    try:
        with open(path, encoding="utf-8") as policy_file:
            raw = json.load(policy_file)
    except OSError as error:
        raise PolicyError(f"cannot read policy {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise PolicyError(f"policy {path} is not valid JSON: {error}") from error

    def string_list(value, where):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise PolicyError(f"policy {path}: {where} must be a list of crate names")
        return set(value)

    if not isinstance(raw, dict) or not isinstance(raw.get("crates"), dict) or not raw["crates"]:
        raise PolicyError(f'policy {path}: expected an object with a non-empty "crates" object')
    dev_extra = string_list(raw.get("dev_extra", []), '"dev_extra"')
    forbidden = string_list(raw.get("forbidden", []), '"forbidden"')
    crates = {}
    for name, row in raw["crates"].items():
        if not isinstance(row, dict):
            raise PolicyError(f"policy {path}: crates.{name} must be an object")
        unknown_keys = set(row) - {"allow", "dev_extra", "design", "note"}
        if unknown_keys:
            raise PolicyError(f"policy {path}: crates.{name} has unknown keys {sorted(unknown_keys)}")
        if "allow" not in row:
            raise PolicyError(f'policy {path}: crates.{name} needs an "allow" list (empty for none)')
        dev_extra_enabled = row.get("dev_extra", True)
        if not isinstance(dev_extra_enabled, bool):
            raise PolicyError(f'policy {path}: crates.{name}.dev_extra must be true or false')
        crates[name] = {
            "allow": string_list(row["allow"], f"crates.{name}.allow"),
            "dev_extra": dev_extra_enabled,
            "design": row.get("design", ""),
        }

    known = set(crates)
    for name, row in crates.items():
        unknown = row["allow"] - known
        if unknown:
            raise PolicyError(f"policy {path}: crates.{name}.allow names crates with no row: {sorted(unknown)}")
        if name in row["allow"]:
            raise PolicyError(f"policy {path}: crates.{name}.allow names the crate itself")
        bad = row["allow"] & forbidden
        if bad:
            raise PolicyError(
                f"policy {path}: crates.{name}.allow names {sorted(bad)}, which docs/architecture.md says nothing may depend on"
            )
    for where, names in (('"dev_extra"', dev_extra), ('"forbidden"', forbidden)):
        unknown = names - known
        if unknown:
            raise PolicyError(f"policy {path}: {where} names crates with no row: {sorted(unknown)}")
    if dev_extra & forbidden:
        raise PolicyError(f'policy {path}: {sorted(dev_extra & forbidden)} is both in "dev_extra" and "forbidden"')
    if ROOT_CRATE in crates and (crates[ROOT_CRATE]["allow"] or crates[ROOT_CRATE]["dev_extra"]):
        raise PolicyError(f"policy {path}: {ROOT_CRATE} must depend on nothing of ours (docs/architecture.md), not even in tests")
    module_circles = raw.get("module_circles", {})
    if not isinstance(module_circles, dict) or set(module_circles) - {"enforce", "about"}:
        raise PolicyError(f'policy {path}: "module_circles" must be an object with an "enforce" list')
    circles_enforced = string_list(module_circles.get("enforce", []), '"module_circles.enforce"')
    if circles_enforced - known:
        raise PolicyError(
            f'policy {path}: "module_circles.enforce" names crates with no row: {sorted(circles_enforced - known)}'
        )
    return Policy(crates, dev_extra, forbidden, path, frozenset(circles_enforced))


def read_metadata(metadata_path):
    if metadata_path is not None:
        try:
            with open(metadata_path, encoding="utf-8") as metadata_file:
                return json.load(metadata_file)
        except (OSError, json.JSONDecodeError) as error:
            raise PolicyError(f"cannot read metadata {metadata_path}: {error}") from error
    cargo = os.environ.get("CARGO", "cargo")
    command = [
        cargo,
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--manifest-path",
        str(REPO_ROOT / "Cargo.toml"),
    ]
    try:
        completed = subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise PolicyError(f"cannot run {cargo}: {error}") from error
    except subprocess.CalledProcessError as error:
        raise PolicyError(f"{' '.join(command)} failed:\n{error.stderr.strip()}") from error
    return json.loads(completed.stdout)


def describe_allowed(policy, crate, kind):
    allowed = sorted(policy.allowed(crate, kind))
    listed = ", ".join(allowed) if allowed else "no workspace crates"
    design = policy.crates[crate]["design"]
    suffix = f' (docs/architecture.md: "{design}")' if design else ""
    return f"{kind} dependencies of {crate} may name {listed}{suffix}"


def check(metadata, policy):
    """Returns (violations, number of workspace crates checked)."""
    member_ids = set(metadata.get("workspace_members", []))
    packages = [package for package in metadata.get("packages", []) if not member_ids or package["id"] in member_ids]
    workspace_names = {package["name"] for package in packages}
    violations = []

    for name in sorted(workspace_names - set(policy.crates)):
        violations.append(
            f"{name}: workspace crate has no row in the policy; add it to docs/architecture.md's crate table "
            f"and to scripts/crate-graph.json"
        )
    for name in sorted(set(policy.crates) - workspace_names):
        violations.append(
            f"{name}: in scripts/crate-graph.json but not a workspace crate; remove it from the policy "
            f"and docs/architecture.md, or fix the name"
        )

    for package in sorted(packages, key=lambda package: package["name"]):
        crate = package["name"]
        if crate not in policy.crates:
            continue
        for dependency in package.get("dependencies", []):
            target = dependency["name"]
            if target not in workspace_names:
                continue
            kind = KIND_NAMES.get(dependency.get("kind"), dependency.get("kind"))
            details = []
            if dependency.get("rename"):
                details.append(f"renamed to {dependency['rename']}")
            if dependency.get("target"):
                details.append(f"for target {dependency['target']}")
            detail = f" ({', '.join(details)})" if details else ""
            if target in policy.forbidden:
                violations.append(
                    f"{crate}: {kind} dependency on {target}{detail} is forbidden: nothing may depend on "
                    f"{target} (it is a binary; run it as a process); {describe_allowed(policy, crate, kind)}"
                )
            elif target not in policy.allowed(crate, kind):
                violations.append(
                    f"{crate}: {kind} dependency on {target}{detail} is not allowed; "
                    f"{describe_allowed(policy, crate, kind)}"
                )
    return violations, len(packages)


# ---------------------------------------------------------------------------------------------
# Module circles: the import graph between the modules of one crate, from its sources.

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_RE = re.compile(rf"\b(?:r#)?{IDENT}(?:\s*::\s*(?:r#)?{IDENT})+")
USE_RE = re.compile(r"\b(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]+);")
MOD_DECL_RE = re.compile(rf"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+({IDENT})\s*([;{{])")


def strip_code(text):
    """The text with comments, string and char literals blanked out (lifetimes kept), so a path
    in a doc comment or a message is not taken for an import. Line breaks are kept."""
    out = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if text.startswith("//", index):
            end = text.find("\n", index)
            index = length if end == -1 else end
        elif text.startswith("/*", index):
            depth, index = 1, index + 2
            while index < length and depth:
                if text.startswith("/*", index):
                    depth, index = depth + 1, index + 2
                elif text.startswith("*/", index):
                    depth, index = depth - 1, index + 2
                else:
                    if text[index] == "\n":
                        out.append("\n")
                    index += 1
        elif char == "r" and re.match(r'r#*"', text[index:index + 260]) and not (index and (text[index - 1].isalnum() or text[index - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[index:]).group(1)
            end = text.find('"' + hashes, index + len(hashes) + 2)
            end = length if end == -1 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", index, end))
            index = end
        elif char == '"':
            index += 1
            start = index
            while index < length and text[index] != '"':
                index += 2 if text[index] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", start, index))
            index += 1
        elif char == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a): only the former is blanked.
            match = re.match(r"'(?:\\(?:u\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|.)|[^\\'])'", text[index:index + 12])
            if match:
                out.append("' '")
                index += match.end()
            else:
                out.append(char)
                index += 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def matching_brace(text, open_index):
    depth = 0
    for index in range(open_index, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return len(text) - 1


def module_declarations(code):
    """(`mod` declarations outside tests as (name, inline body or None), code without test modules)."""
    declarations = []
    kept = []
    position = 0
    for match in MOD_DECL_RE.finditer(code):
        if match.start() < position:
            continue
        attributes, name, opener = match.group(1), match.group(2), match.group(3)
        is_test = re.search(r"cfg\s*\(\s*test\s*\)", attributes) is not None
        end = match.end()
        body = None
        if opener == "{":
            close = matching_brace(code, match.end() - 1)
            body = code[match.end():close]
            end = close + 1
        if is_test:
            kept.append(code[position:match.start()])
            kept.append("\n" * code.count("\n", match.start(), end))
            position = end
            continue
        declarations.append((name, body))
    kept.append(code[position:])
    return declarations, "".join(kept)


def read_crate_modules(root_file):
    """Module path (tuple) -> (file, code) for every module of the crate rooted at root_file, by
    following `mod` declarations. Test modules are left out; an inline module's code counts as
    its file's."""
    modules = {}

    def visit(path, file_path, children_dir):
        try:
            text = file_path.read_text(encoding="utf-8")
        except OSError:
            return
        declarations, code = module_declarations(strip_code(text))
        modules[path] = (file_path, code)
        for name, body in declarations:
            if body is not None:
                continue
            for candidate, grandchildren in (
                (children_dir / f"{name}.rs", children_dir / name),
                (children_dir / name / "mod.rs", children_dir / name),
            ):
                if candidate.is_file():
                    visit(path + (name,), candidate, grandchildren)
                    break

    root_file = Path(root_file)
    visit((), root_file, root_file.parent)
    return modules


def expand_use_tree(tree):
    """`a::{b, c::{d as e, self}}` -> [["a", "b"], ["a", "c", "d"], ["a", "c"]]."""
    tree = re.sub(r"\s*(::|[{},])\s*", r"\1", tree.strip())
    results = []

    def walk(prefix, text):
        parts = []
        depth, start = 0, 0
        for index, char in enumerate(text):
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            elif char == "," and depth == 0:
                parts.append(text[start:index])
                start = index + 1
        parts.append(text[start:])
        for part in filter(None, (part.strip() for part in parts)):
            brace = part.find("{")
            if brace != -1:
                head = [segment for segment in part[:brace].split("::") if segment]
                walk(prefix + head, part[brace + 1:part.rfind("}")])
                continue
            part = re.split(r"\s+as\s+", part)[0]
            segments = [segment for segment in part.split("::") if segment and segment != "*"]
            if segments == ["self"]:
                segments = []
            results.append(prefix + segments)

    walk([], tree)
    return results


class ModuleGraph:
    def __init__(self, modules):
        self.modules = modules
        self.reexports = {path: {} for path in modules}  # module -> exported name -> full path
        for path, (_, code) in modules.items():
            for match in USE_RE.finditer(code):
                if not match.group(1):
                    continue
                for segments in expand_use_tree(match.group(2)):
                    resolved = self.absolute(segments, path)
                    if resolved:
                        self.reexports[path][segments[-1]] = resolved

    def absolute(self, segments, current):
        """The path from the crate root that `segments`, written in module `current`, names; None
        for another crate's."""
        segments = [segment.removeprefix("r#") for segment in segments]
        if not segments:
            return None
        first = segments[0]
        if first == "crate":
            return tuple(segments[1:])
        if first in ("super", "self"):
            base = list(current)
            rest = list(segments)
            while rest and rest[0] in ("super", "self"):
                if rest.pop(0) == "super":
                    if not base:
                        return None
                    base.pop()
            return tuple(base + rest)
        if tuple(current) + (first,) in self.modules:
            return tuple(current) + tuple(segments)
        return None

    def target(self, absolute_path, hops=0):
        """(module, item name) that an absolute path lands in, following `pub use` re-exports."""
        for cut in range(len(absolute_path), -1, -1):
            module = absolute_path[:cut]
            if module in self.modules:
                item = absolute_path[cut] if cut < len(absolute_path) else None
                if item is not None and hops < 8 and item in self.reexports[module]:
                    forwarded = self.reexports[module][item] + absolute_path[cut + 1:]
                    if forwarded != absolute_path:
                        return self.target(forwarded, hops + 1)
                return module, item
        return None

    def edges(self):
        """{(from module, to module): set of names}, self-loops and test modules left out."""
        found = {}
        for path, (_, code) in self.modules.items():
            candidates = []
            for match in USE_RE.finditer(code):
                candidates += expand_use_tree(match.group(2))
            rest = USE_RE.sub(" ", code)
            candidates += [re.split(r"\s*::\s*", match.group(0)) for match in PATH_RE.finditer(rest)]
            for segments in candidates:
                absolute = self.absolute(segments, path)
                if absolute is None:
                    continue
                landed = self.target(absolute)
                if landed is None:
                    continue
                module, item = landed
                if module == path:
                    continue
                # `super::x` from a child names the parent; naming a child from its parent is an
                # import too. Only the bare containment (a `mod` line) is not an edge.
                found.setdefault((path, module), set()).add(item or "::".join(module[-1:]) or "crate")
        return found


def strongly_connected(nodes, edges):
    """Tarjan's algorithm, iteratively; components of more than one node, each sorted."""
    successors = {node: [] for node in nodes}
    for source, target in edges:
        successors[source].append(target)
    index_of, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(nodes):
        if root in index_of:
            continue
        work = [(root, iter(sorted(successors[root])))]
        index_of[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index_of:
                    index_of[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index_of[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def crate_roots(package):
    """Source files of a package's library and binaries under its `src/`."""
    manifest = package.get("manifest_path")
    if not manifest:
        return []
    source_dir = Path(manifest).parent / "src"
    roots = []
    for target in package.get("targets", []):
        if not set(target.get("kind", [])) & {"lib", "rlib", "bin", "proc-macro"}:
            continue
        src_path = Path(target.get("src_path", ""))
        if source_dir in src_path.parents and src_path.is_file() and src_path not in roots:
            roots.append(src_path)
    return roots


def display_path(path):
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def module_circles(metadata, policy):
    """(violations, warnings, crates read): one entry per import circle between a crate's modules."""
    member_ids = set(metadata.get("workspace_members", []))
    violations, warnings, read = [], [], 0
    for package in sorted(metadata.get("packages", []), key=lambda package: package["name"]):
        if member_ids and package["id"] not in member_ids:
            continue
        for root in crate_roots(package):
            read += 1
            modules = read_crate_modules(root)
            graph = ModuleGraph(modules)
            edges = graph.edges()
            for component in strongly_connected(list(modules), edges):
                members = set(component)
                files = [display_path(modules[module][0]) for module in component]
                ties = [
                    f"  {display_path(modules[source][0])} -> {display_path(modules[target][0])}: "
                    f"{', '.join(sorted(names))}"
                    for (source, target), names in sorted(edges.items())
                    if source in members and target in members
                ]
                crate = package["name"]
                if crate in policy.circles_enforced:
                    violations.append(
                        f"{crate}: module circle ({len(files)} files): {', '.join(files)}; break it so each "
                        f"module only imports modules below it\n" + "\n".join(ties)
                    )
                else:
                    warnings.append(
                        f"warning: {crate}: module circle ({len(files)} files, report only): {', '.join(files)}\n"
                        + "\n".join(ties)
                    )
    return violations, warnings, read


def architecture_table(path):
    """{crate name: "may depend on" text} from the `## Crates` table of docs/architecture.md."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read {path}: {error}") from error
    section = re.search(r"^## Crates\n(.*?)(?=^## )", text + "\n## end", re.S | re.M)
    if section is None:
        raise PolicyError(f"{path} has no '## Crates' section with the crate table")
    rows = {}
    for line in section.group(1).splitlines():
        match = re.match(r"^\|\s*`([a-z]+)`\s*\|.*\|\s*([^|]*?)\s*\|\s*$", line)
        if match:
            rows[f"meridian-{match.group(1)}"] = match.group(2)
    if not rows:
        raise PolicyError(f"{path}: the '## Crates' section has no table rows like | `proto` | owns | may depend on |")
    return rows


def check_architecture(policy, architecture_path):
    """The crate table of docs/architecture.md says what the policy says: same crates, and each
    "may depend on" cell word for word the row's `design` text."""
    rows = architecture_table(architecture_path)
    problems = []
    for crate in sorted(set(policy.crates) - set(rows)):
        problems.append(f"{crate}: in scripts/crate-graph.json but has no row in {architecture_path}'s crate table")
    for crate in sorted(set(rows) - set(policy.crates)):
        problems.append(f"{crate}: has a row in {architecture_path}'s crate table but none in scripts/crate-graph.json")
    for crate in sorted(set(rows) & set(policy.crates)):
        design = policy.crates[crate]["design"]
        if rows[crate] != design:
            problems.append(
                f"{crate}: {architecture_path} says it may depend on {rows[crate]!r}, scripts/crate-graph.json "
                f"says {design!r}; make them say the same"
            )
    return problems


def run_check(metadata_path, policy_path, architecture_path=DEFAULT_ARCHITECTURE):
    try:
        policy = load_policy(policy_path)
        metadata = read_metadata(metadata_path)
        architecture_problems = check_architecture(policy, architecture_path)
    except PolicyError as error:
        print(f"crate graph check: {error}", file=sys.stderr)
        return 2
    violations, crate_count = check(metadata, policy)
    violations += architecture_problems
    circle_violations, circle_warnings, crates_read = module_circles(metadata, policy)
    for warning in circle_warnings:
        print(warning)
    if violations or circle_violations:
        for violation in violations + circle_violations:
            print(violation)
        print(
            f"crate graph: {len(violations) + len(circle_violations)} violation(s); the policy is "
            f"docs/architecture.md's crate table, mirrored in scripts/crate-graph.json (change both together)",
            file=sys.stderr,
        )
        return 1
    enforced = ", ".join(sorted(policy.circles_enforced)) or "no crate"
    print(
        f"crate graph ok ({crate_count} crates); module circles: none in {enforced}, "
        f"{len(circle_warnings)} reported elsewhere ({crates_read} crate targets read)"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# Self-test: run this very script (as a process, through --metadata) on doctored metadata.


def fixture_dependency(name, kind=None, rename=None, target=None, workspace=True):
    dependency = {
        "name": name,
        "source": None if workspace else "registry+https://github.com/rust-lang/crates.io-index",
        "req": "*",
        "kind": kind,
        "rename": rename,
        "optional": False,
        "uses_default_features": True,
        "features": [],
        "target": target,
        "registry": None,
    }
    if workspace:
        dependency["path"] = f"/repo/{name.removeprefix('meridian-')}"
    return dependency


def fixture_package(name, dependencies):
    package_id = f"path+file:///repo/{name.removeprefix('meridian-')}#{name}@0.1.0"
    return {"name": name, "version": "0.1.0", "id": package_id, "dependencies": dependencies}


def clean_fixture(policy):
    """A graph that uses every permission of the policy and nothing more, shaped like cargo's output."""
    packages = []
    for crate in sorted(policy.crates):
        dependencies = [fixture_dependency("bytes", workspace=False), fixture_dependency("proptest", "dev", workspace=False)]
        dependencies += [fixture_dependency(target) for target in sorted(policy.allowed(crate, "normal"))]
        dependencies += [fixture_dependency(target, "dev") for target in sorted(policy.allowed(crate, "dev"))]
        packages.append(fixture_package(crate, dependencies))
    return {
        "packages": packages,
        "workspace_members": [package["id"] for package in packages],
        "workspace_root": "/repo",
        "version": 1,
    }


def add_dependency(metadata, crate, dependency):
    doctored = copy.deepcopy(metadata)
    for package in doctored["packages"]:
        if package["name"] == crate:
            package["dependencies"].append(dependency)
            return doctored
    raise AssertionError(f"fixture has no crate {crate}")


def fixture_crate(directory, name, files):
    """Writes a crate's sources under directory/name and returns metadata fields pointing at them."""
    crate_dir = Path(directory) / name
    for relative, text in files.items():
        path = crate_dir / "src" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return {
        "manifest_path": str(crate_dir / "Cargo.toml"),
        "targets": [{"kind": ["lib"], "name": name, "src_path": str(crate_dir / "src" / "lib.rs")}],
    }


# A crate whose `state` and `error` modules import each other, as the nameserver's did.
CIRCLE_CRATE = {
    "lib.rs": "pub mod error;\npub mod state;\npub mod types;\npub use state::Command;\n",
    "state.rs": "use crate::error::CommandError;\npub enum Command { Apply }\npub fn apply() -> CommandError { CommandError }\n",
    "error.rs": "use crate::state::{Command as Cmd, self};\npub struct CommandError;\npub fn of(_: Cmd) {}\n",
    "types.rs": "pub struct Request(pub crate::Command);\n",
}

# The same modules, layered: the names of the other module appear only in comments, strings,
# a char literal next to a lifetime and a test module, none of which is an import.
LAYERED_CRATE = {
    "lib.rs": "pub mod error;\npub mod state;\n",
    "state.rs": "use crate::error::CommandError;\npub fn apply<'a>(_: &'a str) -> CommandError { let _ = '{'; CommandError }\n",
    "error.rs": (
        "//! Refusals of [`crate::state::apply`].\n"
        "/* crate::state::apply, /* nested */ still a comment */\n"
        "pub struct CommandError;\n"
        "pub const HINT: &str = \"see crate::state::apply\";\n"
        "pub const RAW: &str = r#\"crate::state::apply \"quoted\"\"#;\n"
        "#[cfg(test)]\nmod tests {\n    use crate::state::apply;\n    fn t() { apply(\"x\"); }\n}\n"
    ),
}


def with_sources(metadata, crate, fields):
    doctored = copy.deepcopy(metadata)
    for package in doctored["packages"]:
        if package["name"] == crate:
            package.update(fields)
            return doctored
    raise AssertionError(f"fixture has no crate {crate}")


def self_test(policy_path):
    try:
        policy = load_policy(policy_path)
    except PolicyError as error:
        print(f"crate graph self-test: {error}", file=sys.stderr)
        return 2
    clean = clean_fixture(policy)
    crate_count = len(clean["packages"])
    extra_crate = fixture_package("meridian-extra", [fixture_dependency("meridian-proto")])
    with_extra_crate = copy.deepcopy(clean)
    with_extra_crate["packages"].append(extra_crate)
    with_extra_crate["workspace_members"].append(extra_crate["id"])
    missing_crate = copy.deepcopy(clean)
    missing_crate["packages"] = [p for p in missing_crate["packages"] if p["name"] != "meridian-ui"]
    missing_crate["workspace_members"] = [p["id"] for p in missing_crate["packages"]]
    cli_dependency = fixture_dependency("meridian-cli")
    sources = tempfile.TemporaryDirectory(prefix="crate-graph-self-test-sources-")
    circle_sources = fixture_crate(sources.name, "circle", CIRCLE_CRATE)
    layered_sources = fixture_crate(sources.name, "layered", LAYERED_CRATE)

    # (name, metadata, policy override or None, expected exit, strings every output must contain)
    cases = [
        ("clean graph passes", clean, None, 0, [f"crate graph ok ({crate_count} crates)"]),
        (
            "ui may not use a service's internals",
            add_dependency(clean, "meridian-ui", fixture_dependency("meridian-broker")),
            None,
            1,
            ["meridian-ui: normal dependency on meridian-broker is not allowed", "meridian-client, meridian-proto"],
        ),
        (
            "proto depends on nothing of ours",
            add_dependency(clean, "meridian-proto", fixture_dependency("meridian-client", "build")),
            None,
            1,
            ["meridian-proto: build dependency on meridian-client is not allowed", "may name no workspace crates"],
        ),
        (
            "proto's tests may not use the client either",
            add_dependency(clean, "meridian-proto", fixture_dependency("meridian-client", "dev")),
            None,
            1,
            ["meridian-proto: dev dependency on meridian-client is not allowed"],
        ),
        (
            "dev-dependencies beyond proto and client are refused",
            add_dependency(clean, "meridian-nameserver", fixture_dependency("meridian-broker", "dev")),
            None,
            1,
            ["meridian-nameserver: dev dependency on meridian-broker is not allowed"],
        ),
        (
            "a dev-only permission does not allow a normal dependency",
            add_dependency(clean, "meridian-archive", fixture_dependency("meridian-client")),
            None,
            1,
            ["meridian-archive: normal dependency on meridian-client is not allowed"],
        ),
        (
            "nothing depends on cli, not even tests",
            add_dependency(clean, "meridian-tests", fixture_dependency("meridian-cli", "dev")),
            None,
            1,
            ["meridian-tests: dev dependency on meridian-cli is forbidden"],
        ),
        (
            "renamed and target-specific dependencies are still checked",
            add_dependency(
                clean,
                "meridian-query",
                fixture_dependency("meridian-nameserver", rename="ns", target="cfg(unix)"),
            ),
            None,
            1,
            ["meridian-query: normal dependency on meridian-nameserver (renamed to ns, for target cfg(unix))"],
        ),
        (
            "every violation is reported, not only the first",
            add_dependency(add_dependency(clean, "meridian-broker", cli_dependency), "meridian-tracer", cli_dependency),
            None,
            1,
            ["meridian-broker: normal dependency on meridian-cli", "meridian-tracer: normal dependency on meridian-cli"],
        ),
        (
            "a crate without a policy row fails",
            with_extra_crate,
            None,
            1,
            ["meridian-extra: workspace crate has no row in the policy"],
        ),
        (
            "a policy row without a crate fails",
            missing_crate,
            None,
            1,
            ["meridian-ui: in scripts/crate-graph.json but not a workspace crate"],
        ),
        (
            "a policy that lets proto depend on client is refused",
            clean,
            {"meridian-proto": {"allow": ["meridian-client"]}},
            2,
            ["meridian-proto must depend on nothing of ours"],
        ),
        (
            "a policy that allows a dependency on cli is refused",
            clean,
            {"meridian-tests": {"allow": ["meridian-client", "meridian-cli"]}},
            2,
            ["which docs/architecture.md says nothing may depend on"],
        ),
        (
            "a module circle in an enforced crate fails, naming the files and what ties them",
            with_sources(clean, "meridian-nameserver", circle_sources),
            None,
            1,
            [
                "meridian-nameserver: module circle (2 files)",
                "circle/src/error.rs -> ",
                "circle/src/state.rs: Command, state",
                "circle/src/state.rs -> ",
                "circle/src/error.rs: CommandError",
            ],
        ),
        (
            "a module circle elsewhere is a warning only",
            with_sources(clean, "meridian-client", circle_sources),
            # Pinned: the real policy enforces client too.
            {"module_circles": {"enforce": ["meridian-nameserver"]}},
            0,
            ["warning: meridian-client: module circle (2 files, report only)", "crate graph ok"],
        ),
        (
            "enforcing another crate is one edit of the policy",
            with_sources(clean, "meridian-client", circle_sources),
            {"module_circles": {"enforce": ["meridian-nameserver", "meridian-broker", "meridian-client"]}},
            1,
            ["meridian-client: module circle (2 files)"],
        ),
        (
            "the architecture document's crate table must say what the policy says",
            clean,
            # The row is found by its start, so the document's wording may change freely.
            {"__architecture__": ("| `ui` |", "| `ui` | the web console | proto, client, broker |")},
            1,
            ["meridian-ui: ", "says it may depend on 'proto, client, broker'", "make them say the same"],
        ),
        (
            "comments, strings, char literals and test modules are not imports",
            with_sources(clean, "meridian-nameserver", layered_sources),
            # Pinned, so the expected line does not change with the crates the real policy enforces.
            {"module_circles": {"enforce": ["meridian-nameserver"]}},
            0,
            ["module circles: none in meridian-nameserver, 0 reported elsewhere (1 crate targets read)"],
        ),
    ]

    with open(policy_path, encoding="utf-8") as policy_file:
        raw_policy = json.load(policy_file)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="crate-graph-self-test-") as scratch:
        for index, (name, metadata, policy_override, expected_exit, expected_output) in enumerate(cases):
            metadata_path = Path(scratch) / f"metadata-{index}.json"
            metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
            case_policy_path = policy_path
            architecture_arguments = []
            if policy_override and "__architecture__" in policy_override:
                policy_override = dict(policy_override)
                row_start, after = policy_override.pop("__architecture__")
                document = DEFAULT_ARCHITECTURE.read_text(encoding="utf-8")
                before = next((line for line in document.splitlines() if line.startswith(row_start)), None)
                assert before is not None, f"self-test: {DEFAULT_ARCHITECTURE} has no row starting {row_start!r}"
                doctored_document = Path(scratch) / f"architecture-{index}.md"
                doctored_document.write_text(document.replace(before, after), encoding="utf-8")
                architecture_arguments = ["--architecture", str(doctored_document)]
            if policy_override:
                doctored_policy = copy.deepcopy(raw_policy)
                for crate, row in policy_override.items():
                    if crate in doctored_policy["crates"]:
                        doctored_policy["crates"][crate].update(row)
                    else:
                        doctored_policy[crate] = row
                case_policy_path = Path(scratch) / f"policy-{index}.json"
                case_policy_path.write_text(json.dumps(doctored_policy), encoding="utf-8")
            completed = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--metadata",
                    str(metadata_path),
                    "--policy",
                    str(case_policy_path),
                    *architecture_arguments,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            output = completed.stdout + completed.stderr
            problems = []
            if completed.returncode != expected_exit:
                problems.append(f"exit {completed.returncode}, expected {expected_exit}")
            problems += [f"output lacks {text!r}" for text in expected_output if text not in output]
            if problems:
                failures += 1
                print(f"FAIL {name}: {'; '.join(problems)}\n--- output ---\n{output.rstrip()}\n---")
            else:
                print(f"ok   {name}")
    sources.cleanup()
    if failures:
        print(f"crate graph self-test: {failures} of {len(cases)} cases failed", file=sys.stderr)
        return 1
    print(f"crate graph self-test ok ({len(cases)} cases)")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata", metavar="FILE", help="read `cargo metadata --format-version 1` JSON from FILE")
    parser.add_argument(
        "--policy", metavar="FILE", default=str(DEFAULT_POLICY), help="policy JSON (default: %(default)s)"
    )
    parser.add_argument(
        "--architecture",
        metavar="FILE",
        default=str(DEFAULT_ARCHITECTURE),
        help="the document whose crate table must match the policy (default: %(default)s)",
    )
    parser.add_argument("--self-test", action="store_true", help="check the checker on doctored metadata")
    arguments = parser.parse_args()
    if arguments.self_test:
        return self_test(arguments.policy)
    return run_check(arguments.metadata, arguments.policy, arguments.architecture)


if __name__ == "__main__":
    sys.exit(main())
