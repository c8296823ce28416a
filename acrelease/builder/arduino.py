"""Find the OTA images an Arduino IDE or arduino-cli exported, and map them to targets.

Two layouts exist:

* IDE 1.x, *Sketch > Export compiled Binary*: ``<Sketch>.ino.<board>.bin`` next to the sketch
  (``Blink.ino.d1_mini.bin``, ``Blink.ino.esp32.bin``).
* IDE 2.x and ``arduino-cli compile --export-binaries``: ``build/<fqbn with dots>/<Sketch>.ino.bin``
  (``build/esp8266.esp8266.d1_mini/Blink.ino.bin``).

The ESP8266 core writes ``.bin.signed`` next to the ``.bin`` when signing is on; that is the file
a device with a public key accepts, so it wins. Bootloader, partition table and merged
full-flash images are not OTA images and are skipped, as are ELF files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from acrelease.errors import UsageError
from acrelease.manifest import Target

OTA_SUFFIXES = (".bin.signed", ".bin")  # preferred first

# PlatformIO board id -> Arduino board id where the two differ, so a target made by
# `init --platformio` (board = PlatformIO's id) still matches an FQBN's board part.
PIO_TO_ARDUINO_BOARD: Mapping[str, str] = {
    "esp32dev": "esp32",
    "esp32-s3-devkitc-1": "esp32s3",
    "esp32-s2-saola-1": "esp32s2",
    "esp32-c3-devkitm-1": "esp32c3",
    "esp32-c6-devkitc-1": "esp32c6",
    "esp32-h2-devkitm-1": "esp32h2",
    "esp01_1m": "esp8285",
}


@dataclass(frozen=True)
class Export:
    board: str
    """Board id from the file name (IDE 1.x) or the FQBN folder (IDE 2 / arduino-cli)."""
    firmware: Path
    fqbn: str | None = None


def _strip_ota_suffix(name: str) -> tuple[str, str] | None:
    for suffix in OTA_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def _ide1_exports(sketch_dir: Path) -> list[Export]:
    best: dict[str, Path] = {}
    for path in sorted(sketch_dir.iterdir()):
        split = _strip_ota_suffix(path.name)
        if split is None or not path.is_file():
            continue
        stem, suffix = split
        sketch, marker, board = stem.partition(".ino.")
        # Board ids have no dots: "d1_mini.bootloader", "esp32.partitions", "esp32.merged" are
        # the other outputs of the same export, none of them an OTA image.
        if not marker or not sketch or not board or "." in board:
            continue
        if board not in best or suffix == ".bin.signed":
            best[board] = path
    return [Export(board, path) for board, path in sorted(best.items())]


def _cli_exports(sketch_dir: Path) -> list[Export]:
    build = sketch_dir / "build"
    if not build.is_dir():
        return []
    found: list[Export] = []
    for folder in sorted(p for p in build.iterdir() if p.is_dir()):
        parts = folder.name.split(".")
        if len(parts) < 3:
            continue
        chosen: Path | None = None
        for suffix in OTA_SUFFIXES:  # "*.ino.bin" never matches *.ino.bootloader.bin & co.
            candidates = sorted(p for p in folder.glob(f"*.ino{suffix}") if p.is_file())
            if candidates:
                chosen = candidates[0]
                break
        if chosen is not None:
            found.append(Export(parts[2], chosen, ":".join(parts[:3])))
    return found


def find_exports(sketch_dir: Path) -> list[Export]:
    """Every exported OTA image under ``sketch_dir`` (both layouts), signed preferred."""
    if not sketch_dir.is_dir():
        raise UsageError(f"{sketch_dir}: not a folder; pass the sketch folder (the one holding the .ino)")
    return _ide1_exports(sketch_dir) + _cli_exports(sketch_dir)


def _board_key(name: str) -> str:
    """Board ids compared loosely: ``d1mini`` is ``d1_mini`` is ``D1-Mini``."""
    return name.lower().replace("_", "").replace("-", "")


def _board_matches(target: Target, board: str) -> bool:
    names = {target.name, PIO_TO_ARDUINO_BOARD.get(target.name, target.name)}
    if target.board:
        names |= {target.board, PIO_TO_ARDUINO_BOARD.get(target.board, target.board)}
    return _board_key(board) in {_board_key(n) for n in names}


def map_exports(sketch_dir: Path, targets: Sequence[Target], explicit: Mapping[str, Path],
                selected: Sequence[str] = ()) -> dict[str, Path]:
    """target name -> image file for every target, or only for those the user names (``selected``,
    ``--target T``, and the keys of ``explicit``, ``--target T=FILE``). A named file wins; the
    others are the export whose board matches the target's board id or name.

    All or none: a wanted target without an export raises UsageError naming it (a release
    silently missing a board is worse than no release), as does a target matching two exports
    or one export matching two targets (then only ``--target T=FILE`` can say which)."""
    known = [t.name for t in targets]
    for name in selected:
        if name not in known:
            raise UsageError(f"--target {name}: no such target in the manifest (known: {', '.join(known)})")
    unknown = sorted(set(explicit) - set(known))
    if unknown:
        raise UsageError(f"--target {unknown[0]}=...: no such target in the manifest "
                         f"(known: {', '.join(sorted(known))})")
    named = set(selected) | set(explicit)
    wanted = [t for t in targets if t.name in named] if named else list(targets)
    chosen: dict[str, Path] = dict(explicit)
    exports = find_exports(sketch_dir)
    missing: list[Target] = []
    for target in wanted:
        if target.name in chosen:
            continue
        matches = [e for e in exports if _board_matches(target, e.board)]
        if len(matches) > 1:
            files = ", ".join(str(m.firmware) for m in matches)
            raise UsageError(f"target '{target.name}' matches several exports ({files}); "
                             f"pick one with --target {target.name}=FILE")
        if matches:
            chosen[target.name] = matches[0].firmware
        else:
            missing.append(target)
    if missing:
        used = set(chosen.values())
        boards = ", ".join(sorted({e.board for e in exports if e.firmware not in used})) or "none"
        names = ", ".join(f"{t.name} (board {t.board or '?'})" for t in missing)
        first = missing[0].name
        only = " ".join(f"--target {name}" for name in chosen)
        rest = f", or record only the others ({only})" if only else ""
        raise UsageError(
            f"{sketch_dir}: no exported image matches target {names} (unused exports for boards: {boards}), "
            f"so nothing was recorded; export it (Sketch > Export Compiled Binary or `arduino-cli compile "
            f"--export-binaries`), set its board (`acrelease target set {first} --board BOARD`), "
            f"name its file (--target {first}=FILE){rest}")
    by_file: dict[Path, list[str]] = {}
    for name, path in chosen.items():
        by_file.setdefault(path.resolve(), []).append(name)
    for path, names_of in by_file.items():
        if len(names_of) > 1:
            raise UsageError(f"{path}: is the image of targets {', '.join(names_of)} at once; name each "
                             f"target's own file with --target {names_of[0]}=FILE")
    return chosen
