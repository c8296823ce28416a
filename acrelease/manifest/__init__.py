"""``releases.toml``: the release manifest of one firmware project.

Reading goes through :func:`load`, which turns the file into frozen dataclasses and reports
*every* problem at once, each prefixed with the file and its TOML path
(``releases.toml: releases[2].version: "1.2" is not a semantic version ...``). Files named by
the manifest are checked against their recorded size and hashes.

Writing goes through tomlkit (:func:`init_manifest`, :func:`plan_release`, :func:`plan_target`),
so a user's comments and layout survive every edit. An edit builds the complete new text in
memory and validates it with the same checks as :func:`load` before anything is written
(:class:`PendingEdit`); the file is then replaced atomically. docs/manifest.md documents every key.

Schema::

    [project]
    name = "demo"                     # catalog and URL name
    version_define = "FW_VERSION"     # optional: the C define the version is compiled in as

    [[targets]]                       # one per board / PlatformIO env
    name = "d1mini"
    chip = "esp8266"                  # optional until the first image tells
    env = "d1_mini"                   # optional: PlatformIO env
    board = "d1_mini"                 # optional: board id (PlatformIO board, FQBN board part)
    filesystem = true                 # optional: the target ships a filesystem image

    [[releases]]
    version = "1.0.0"
    channel = "stable"
    date = "2026-11-27"
    notes = "..."

    [releases.artifacts.d1mini.firmware]
    file = "dist/1.0.0/d1mini/firmware.bin"   # relative to this file
    size = 4480
    md5 = "..."
    sha256 = "..."
    chip = "esp8266"
    format = "plain"
    flash_size = 4194304
    version_found = true
"""

from acrelease.manifest.edit import (
    PendingEdit,
    add_targets,
    init_manifest,
    plan_release,
    plan_target,
    record_artifacts,
    set_target_chip,
)
from acrelease.manifest.load import KNOWN_KEYS, Problem, load, validate
from acrelease.manifest.model import (
    DEFAULT_CHANNEL,
    DEFAULT_DEFINE,
    MANIFEST_NAME,
    ArtifactRecord,
    Manifest,
    Release,
    Target,
    file_digests,
)

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_DEFINE",
    "KNOWN_KEYS",
    "MANIFEST_NAME",
    "ArtifactRecord",
    "Manifest",
    "PendingEdit",
    "Problem",
    "Release",
    "Target",
    "add_targets",
    "file_digests",
    "init_manifest",
    "load",
    "plan_release",
    "plan_target",
    "record_artifacts",
    "set_target_chip",
    "validate",
]
