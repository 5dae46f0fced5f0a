#!/usr/bin/env python3
"""Check the workspace crate graph against the dependency policy of DESIGN.md.

The policy lives in scripts/crate-graph.json and mirrors the crate table in DESIGN.md ("may depend
on"). This script reads `cargo metadata --format-version 1 --no-deps` (or a saved copy given with
--metadata) and checks every dependency of a workspace package on another workspace package:

- normal and build dependencies must be in the crate's `allow` list;
- dev-dependencies may also name the policy's `dev_extra` crates, unless the crate opts out;
- nothing may depend on a `forbidden` crate (meridian-cli), in any kind of dependency;
- every workspace package must have a row in the policy, and every row a package.

Exit status: 0 when the graph follows the policy, 1 on violations (one line each), 2 when the
policy file itself is broken or cargo metadata cannot be read.

`--self-test` runs this script on doctored metadata, with and without violations, and fails if
the check does not notice them, so the check cannot silently rot. Standard library only.
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
DEFAULT_POLICY = SCRIPT_DIR / "crate-graph.json"

# The two rules DESIGN.md states in words under its table. A policy file that breaks them is
# refused outright, whatever else it says.
ROOT_CRATE = "meridian-proto"
KIND_NAMES = {None: "normal", "normal": "normal", "build": "build", "dev": "dev"}


class PolicyError(Exception):
    """The policy file is missing, malformed or contradicts DESIGN.md's stated rules."""


class Policy:
    def __init__(self, crates, dev_extra, forbidden, source):
        self.crates = crates  # name -> {"allow": set, "dev_extra": bool, "design": str}
        self.dev_extra = dev_extra
        self.forbidden = forbidden
        self.source = source

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
                f"policy {path}: crates.{name}.allow names {sorted(bad)}, which DESIGN.md says nothing may depend on"
            )
    for where, names in (('"dev_extra"', dev_extra), ('"forbidden"', forbidden)):
        unknown = names - known
        if unknown:
            raise PolicyError(f"policy {path}: {where} names crates with no row: {sorted(unknown)}")
    if dev_extra & forbidden:
        raise PolicyError(f'policy {path}: {sorted(dev_extra & forbidden)} is both in "dev_extra" and "forbidden"')
    if ROOT_CRATE in crates and (crates[ROOT_CRATE]["allow"] or crates[ROOT_CRATE]["dev_extra"]):
        raise PolicyError(f"policy {path}: {ROOT_CRATE} must depend on nothing of ours (DESIGN.md), not even in tests")
    return Policy(crates, dev_extra, forbidden, path)


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
    suffix = f' (DESIGN.md: "{design}")' if design else ""
    return f"{kind} dependencies of {crate} may name {listed}{suffix}"


def check(metadata, policy):
    """Returns (violations, number of workspace crates checked)."""
    member_ids = set(metadata.get("workspace_members", []))
    packages = [package for package in metadata.get("packages", []) if not member_ids or package["id"] in member_ids]
    workspace_names = {package["name"] for package in packages}
    violations = []

    for name in sorted(workspace_names - set(policy.crates)):
        violations.append(
            f"{name}: workspace crate has no row in the policy; add it to DESIGN.md's crate table "
            f"and to scripts/crate-graph.json"
        )
    for name in sorted(set(policy.crates) - workspace_names):
        violations.append(
            f"{name}: in scripts/crate-graph.json but not a workspace crate; remove it from the policy "
            f"and DESIGN.md, or fix the name"
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


def run_check(metadata_path, policy_path):
    try:
        policy = load_policy(policy_path)
        metadata = read_metadata(metadata_path)
    except PolicyError as error:
        print(f"crate graph check: {error}", file=sys.stderr)
        return 2
    violations, crate_count = check(metadata, policy)
    if violations:
        for violation in violations:
            print(violation)
        print(
            f"crate graph: {len(violations)} violation(s); the policy is DESIGN.md's crate table, "
            f"mirrored in scripts/crate-graph.json (change both together)",
            file=sys.stderr,
        )
        return 1
    print(f"crate graph ok ({crate_count} crates)")
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
            ["which DESIGN.md says nothing may depend on"],
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
            if policy_override is not None:
                doctored_policy = copy.deepcopy(raw_policy)
                for crate, row in policy_override.items():
                    doctored_policy["crates"][crate].update(row)
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
    parser.add_argument("--self-test", action="store_true", help="check the checker on doctored metadata")
    arguments = parser.parse_args()
    if arguments.self_test:
        return self_test(arguments.policy)
    return run_check(arguments.metadata, arguments.policy)


if __name__ == "__main__":
    sys.exit(main())
