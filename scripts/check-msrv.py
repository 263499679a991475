#!/usr/bin/env python3
"""Checks the workspace's declared minimum Rust version against its dependencies.

Only one toolchain can be installed on the project's machines, so the MSRV cannot be proven by
building with it. What can be checked is that the declared `rust-version` is not a promise the
dependency graph breaks: no package in `Cargo.lock` may declare a newer `rust-version` than the
workspace's. Exits 1 and names the packages that do.
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


metadata = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(metadata["workspace_members"])
declared = [
    version(p["rust_version"])
    for p in metadata["packages"]
    if p["id"] in members and p.get("rust_version")
]
if not declared:
    sys.exit("no workspace member declares rust-version")
msrv = max(declared)
newer = sorted(
    f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}'
    for p in metadata["packages"]
    if p.get("rust_version") and version(p["rust_version"]) > msrv
)
if newer:
    print(f"rust-version {'.'.join(map(str, msrv))} is broken by:", *newer, sep="\n  ")
    sys.exit(1)
print(f"rust-version {'.'.join(map(str, msrv))}: no dependency needs a newer Rust "
      f"({len(metadata['packages'])} packages)")
