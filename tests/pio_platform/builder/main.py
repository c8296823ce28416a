# SCons build script of the offline test platform (run by `pio run`).
#
# No compiler: "compiling" means reading the project's sources, finding which macros the
# sketch uses, and writing a real ESP image whose read-only data holds the C strings those
# macros expand to (from the build flags, or from a `#define NAME "..."` in the sources, the
# way an `#ifndef FW_VERSION` fallback works). So a test can prove that the version define
# passed by acrelease really reaches the binary, and that a sketch that never uses it yields
# an image without it.
#
# Test switches (build flags): -DACRELEASE_TEST_COMPILE_ERROR makes the build fail the way a
# compiler error does (message on stderr, non-zero exit).

import gzip
import os
import re
import shlex
import sys
import time

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
platform = env.PioPlatform()
board = env.BoardConfig()

sys.path.insert(0, os.path.join(platform.get_dir(), "builder"))
import espimage  # noqa: E402

env.Replace(PROGNAME="firmware")
env.ProcessFlags(env.get("BUILD_FLAGS"))

SOURCE_SUFFIXES = (".ino", ".c", ".cpp", ".h", ".hpp")
# String literals first, so a "http://..." inside a string is not taken for a comment.
COMMENTS = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.S)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SOURCE_DEFINE = re.compile(r'^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+("(?:[^"\\]|\\.)*")', re.M)


def _sources():
    """The sketch's sources and the project's headers (where an `#ifndef` fallback lives)."""
    found = []
    for folder in (env.subst("$PROJECT_SRC_DIR"), env.subst("$PROJECT_INCLUDE_DIR")):
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                if name.endswith(SOURCE_SUFFIXES):
                    found.append(os.path.join(root, name))
    return sorted(found)


def _c_string(body):
    """The value of a C string literal body (`"1.2.3"`), or None when it is not one."""
    if len(body) < 2 or body[0] != '"' or body[-1] != '"':
        return None
    return body[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def _command_line_defines():
    """name -> macro body exactly as the compiler would receive it through the shell."""
    defines = {}
    for item in env.get("CPPDEFINES", []):
        if isinstance(item, (tuple, list)):
            # `'-D NAME="x"'` arrives as (" NAME", ...): gcc strips that blank too.
            name, value = str(item[0]).strip(), str(item[1])
            # SCons writes -DNAME=VALUE into a shell command line: undo that quoting.
            arg = shlex.split(f"-D{name}={value}")[0]
            defines[name] = arg.split("=", 1)[1]
        else:
            defines[str(item).strip()] = "1"
    return defines


def _compile(target, source, env):
    defines = _command_line_defines()
    if "ACRELEASE_TEST_COMPILE_ERROR" in defines:
        sys.stderr.write("src/main.cpp:3:2: error: #error \"ACRELEASE_TEST_COMPILE_ERROR is set\"\n")
        return 1
    text = ""
    for path in source:
        with open(str(path), encoding="utf-8", errors="replace") as fp:
            text += fp.read() + "\n"
    fallback = dict(SOURCE_DEFINE.findall(text))
    # A macro is "used" when code mentions it; comments and preprocessor lines (#ifndef X,
    # #define X) do not count, as for a compiler.
    text = COMMENTS.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = set(IDENT.findall(code))
    strings = []
    for name in sorted(used):
        body = defines.get(name, fallback.get(name))
        if body is None:
            continue
        value = _c_string(body)
        if value is None:
            if body.replace(".", "").isdigit() and body.count(".") > 1:
                sys.stderr.write(f"src/main.cpp: error: too many decimal points in number ({name}={body})\n")
                return 1
            continue
        strings.append(value)
    mcu = board.get("build.mcu")
    seed = (env.subst("$PIOENV") + "|" + "|".join(strings)).encode()
    common = dict(
        flash_mode=env.subst(board.get("build.flash_mode", "dio")),
        flash_size=board.get("upload.flash_size", "4MB"),
        flash_freq=board.get("build.f_flash", "40000000L"),
        seed=seed,
    )
    if mcu == "esp8266":
        image = espimage.esp8266_image(strings, **common)
        if str(env.GetProjectOption("board_build.gzip_fw", "no")).lower() in ("1", "yes", "true", "on"):
            # Like the real esp8266 platform: firmware.bin itself becomes the gzip file.
            image = gzip.compress(image, mtime=0)
    elif mcu in espimage.LAYOUTS:
        stamp = time.gmtime(int(env.get("UNIX_TIME", 0)))
        build_time = (time.strftime("%H:%M:%S", stamp), time.strftime("%b %d %Y", stamp))
        image = espimage.esp32_image(mcu, strings, build_time=build_time, **common)
    else:
        sys.stderr.write(f"Error: board {env.subst('$BOARD')} has mcu {mcu!r}, which this platform cannot build\n")
        return 1
    with open(str(target[0]), "wb") as fp:
        fp.write(image)
    print(f"Wrote {target[0]} ({len(image)} bytes, {mcu})")
    return None


def _buildfs(target, source, env):
    data_dir = env.subst("$PROJECT_DATA_DIR")
    files = {}
    if os.path.isdir(data_dir):
        for root, _, names in os.walk(data_dir):
            for name in sorted(names):
                path = os.path.join(root, name)
                with open(path, "rb") as fp:
                    files[os.path.relpath(path, data_dir)] = fp.read()
    image = espimage.littlefs_image(files)
    with open(str(target[0]), "wb") as fp:
        fp.write(image)
    print(f"Wrote {target[0]} ({len(image)} bytes, {len(files)} files)")
    return None


# Always rebuilt: cheap, and a new version define must always give a new image.
firmware = env.Command("$BUILD_DIR/${PROGNAME}.bin", _sources(), env.Action(_compile, "Building $TARGET"))
AlwaysBuild(firmware)
Default(firmware)

fs_name = env.GetProjectOption("board_build.filesystem", "littlefs")
fs_image = env.Command(
    f"$BUILD_DIR/{fs_name}.bin",
    [],
    env.Action(_buildfs, "Building file system image $TARGET"),
)
AlwaysBuild(fs_image)
env.Alias("buildfs", fs_image)
