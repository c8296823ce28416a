"""The surface of every command, driven as a user (or a script) drives it: the real CLI in a subprocess.

A mistake is exactly one line on stderr, ``acrelease: error: ...``, with its exit code and no
traceback (usage mistakes: exit 2, never Typer's framed box); under ``--json`` it is one JSON
object on stderr with the same code. A refused command changes no file. Input files are read
with a bound: a device, a FIFO or a folder is one line, never a hang. Output that goes to a pipe
is never cut at 80 columns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests import clirun
from tests.factories.images import esp8266_image, merged_image

BOX = "╭"  # rich's framed panels start with it


def run(cwd: Path, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``acrelease ARGS`` with stdout and stderr pipes (not a terminal) and no COLUMNS: a script's view."""
    proc = clirun.run(*args, cwd=cwd, inherit=False, timeout=timeout, input=input)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single ``acrelease: error:`` line of a refused command, checked against its exit code."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("acrelease: error: ") and BOX not in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def json_error(proc: subprocess.CompletedProcess[str], code: int) -> dict[str, object]:
    """The single JSON object a refused ``--json`` command writes on stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    assert value["exit_code"] == code and value["problems"] and value["error"] == value["problems"][0]
    return value


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` and its bytes (FIFOs and sockets are skipped, not read)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proc = run(tmp_path, "init", "--name", "demo", "--target", "d1mini:esp8266", "--target", "s3:esp32s3")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "fw.bin").write_bytes(esp8266_image("1.0.0"))
    return tmp_path


# -- usage errors: one line, exit 2, for every command -------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["serve", "--port", "80000"], ["serve:", "--port", "65535", "acrelease serve --help"]),
    (["serve", "--port", "-1"], ["--port"]),
    (["serve", "--workers", "0"], ["--workers"]),
    (["serve", "--max-downloads", "0"], ["--max-downloads"]),
    (["serve", "--port", "eighty"], ["--port"]),
    (["list", "--bogus"], ["list:", "no such option: --bogus"]),
    (["add"], ["add:", "missing argument"]),
    (["add", "1.0.0", "fw.bin"], ["add:", "--target"]),
    (["publish", "--catalog"], ["publish:", "--catalog"]),
    (["auth", "list"], ["auth list:", "--file"]),
    (["auth", "frobnicate"], ["auth:", "frobnicate"]),
    (["nosuch"], ["no such command", "nosuch"]),
    (["template", "a", "b"], ["template:", "b"]),
    (["build", "--bump", "huge"], ["--bump huge"]),
])
def test_usage_errors_are_one_line_exit_2_and_change_nothing(project: Path, args: list[str],
                                                             needles: list[str]) -> None:
    before = snapshot(project)
    one_error(run(project, *args), 2, *needles)
    assert snapshot(project) == before


def test_usage_error_under_json_is_json_on_stderr(project: Path) -> None:
    proc = run(project, "list", "--json", "--bogus")
    error = json_error(proc, 2)
    assert error["kind"] == "usage" and "--bogus" in str(error["error"])
    assert proc.stdout == ""
    # --json given after the mistake: the command line still asked for JSON
    assert json_error(run(project, "serve", "--port", "80000", "--json"), 2)["kind"] == "usage"


def test_help_off_a_terminal_is_plain_text(project: Path) -> None:
    proc = run(project, "serve", "--help")
    assert proc.returncode == 0 and BOX not in proc.stdout
    assert "--tls-cert" in proc.stdout and "0<=x<=65535" in proc.stdout
    bare = run(project)  # no command: the help, on stderr, as Click does (exit 2)
    assert bare.returncode == 2 and "Usage: acrelease" in bare.stderr and BOX not in bare.stderr


# -- user errors under --json -------------------------------------------------------------------

def test_errors_under_json_are_json_with_the_same_exit_code(project: Path) -> None:
    inspect = json_error(run(project, "inspect", "/dev/zero", "--json"), 4)
    assert inspect["kind"] == "image" and "/dev/zero" in str(inspect["error"])
    assert json_error(run(project, "publish", "--json"), 2)["kind"] == "usage"
    assert json_error(run(project, "auth", "list", "--file", "nope.auth", "--json"), 9)["kind"] == "access"
    (project / "releases.toml").write_text('[project]\nname = "demo"\n[[targets]]\nname = "x"\nchip = "esp99"\n'
                                           '[[releases]]\nversion = "x"\n')
    broken = json_error(run(project, "list", "--json"), 3)
    assert broken["kind"] == "manifest" and len(broken["problems"]) >= 2  # type: ignore[arg-type]
    # the text form of the same mistake: one line per problem, same code
    text = run(project, "list")
    assert text.returncode == 3 and len(text.stderr.splitlines()) == len(broken["problems"])  # type: ignore[arg-type]


def test_inspect_json_exits_like_the_text_form(project: Path) -> None:
    (project / "merged.bin").write_bytes(merged_image("esp32", "1.0.0"))
    proc = run(project, "inspect", "merged.bin", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["servable"] is False and proc.stderr == ""
    assert run(project, "inspect", "merged.bin").returncode == 1
    good = run(project, "inspect", "fw.bin", "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["servable"] is True


def test_json_for_init_auth_and_template(tmp_path: Path) -> None:
    init = run(tmp_path, "init", "--name", "demo", "--target", "d1mini:esp8266", "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout) == {"manifest": "releases.toml", "project": "demo", "targets": [
        {"name": "d1mini", "chip": "esp8266", "env": None, "board": None, "filesystem": False}]}
    file = tmp_path / "devices.auth"
    added = run(tmp_path, "auth", "add", "fleet", "--file", str(file), "--json", input="secret\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"file": str(file), "user": "fleet", "added": True, "changed": True}
    run(tmp_path, "auth", "add", "lab", "--file", str(file), input="other\n")
    listed = run(tmp_path, "auth", "list", "--file", str(file), "--json")
    assert json.loads(listed.stdout) == {"file": str(file), "users": ["fleet", "lab"]}
    removed = run(tmp_path, "auth", "remove", "lab", "--file", str(file), "--json")
    assert json.loads(removed.stdout) == {"file": str(file), "user": "lab", "removed": True}
    templates = json.loads(run(tmp_path, "template", "--json").stdout)["templates"]
    assert "acrelease_version.h" in templates and templates == sorted(templates)
    one = json.loads(run(tmp_path, "template", "acrelease_version.h", "--json").stdout)
    assert one["name"] == "acrelease_version.h" and "#ifndef FW_VERSION" in one["text"]
    assert json_error(run(tmp_path, "template", "nope", "--json"), 2)["kind"] == "usage"


# -- inputs are read with a bound, and named ----------------------------------------------------

@pytest.fixture
def odd_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "odd" / "fifo.bin"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    sock_path = tmp_path / "odd" / "s.bin"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path))
    big = tmp_path / "odd" / "huge.bin"
    with big.open("wb") as handle:
        handle.truncate(129 * 1024 * 1024)  # sparse: larger than any flash, costs no disk
    return {"a character device": Path("/dev/zero"), "a named pipe (FIFO)": fifo, "a socket": sock_path,
            "a folder": tmp_path / "odd", "larger than 128 MiB": big}


@pytest.mark.parametrize("what", ["a character device", "a named pipe (FIFO)", "a socket", "a folder",
                                  "larger than 128 MiB"])
def test_inspect_and_add_refuse_what_is_not_an_image_file(project: Path, odd_paths: dict[str, Path],
                                                          what: str) -> None:
    path = odd_paths[what]
    one_error(run(project, "inspect", str(path), timeout=30), 4, str(path), what)
    before = snapshot(project)
    one_error(run(project, "add", "1.0.0", str(path), "--target", "d1mini", timeout=30), 4, str(path), what)
    one_error(run(project, "collect", ".", "--version", "1.0.0", "--target", f"d1mini={path}", timeout=30), 4,
              what)
    assert snapshot(project) == before and not (project / "dist").exists()


def test_a_short_text_file_is_not_an_image_not_a_truncated_one(project: Path) -> None:
    (project / "notes.bin").write_text("hello\n")
    line = one_error(run(project, "inspect", "notes.bin"), 4, "notes.bin: not an ESP firmware image", "a text file")
    assert "truncated" not in line
    (project / "fw.elf").write_bytes(b"\x7fELF\x01\x01\x01" + bytes(100))
    one_error(run(project, "inspect", "fw.elf"), 4, "an ELF file")
    (project / "short.bin").write_bytes(b"\xe9\x01")  # an image's magic byte, then nothing: truncated
    one_error(run(project, "inspect", "short.bin"), 4, "truncated ESP image (2 bytes)")


def test_access_files_are_bounded_too(project: Path) -> None:
    one_error(run(project, "auth", "list", "--file", "/dev/zero", timeout=30), 9, "/dev/zero",
              "is a character device")


# -- output to a pipe is never cut --------------------------------------------------------------

def test_tables_and_messages_in_a_pipe_are_not_cut_at_80_columns(tmp_path: Path) -> None:
    board, other, channel = "lolin_d1_mini_pro_board_rev2_xyz", "esp32s3_devkitc_1_n16r8_board_xy", "beta-testers"
    project = tmp_path
    assert run(project, "init", "--name", "demo-project-with-a-long-name-xx", "--target", f"{board}:esp8266",
               "--target", f"{other}:esp32s3").returncode == 0
    (project / "fw.bin").write_bytes(esp8266_image("1.0.0"))
    assert run(project, "add", "1.0.0", "fw.bin", "--target", board, "--channel", channel).returncode == 0
    listing = run(project, "list")
    assert listing.returncode == 0 and "…" not in listing.stdout
    row = next(line for line in listing.stdout.splitlines() if board in line and channel in line)
    assert len(row.rstrip()) > 80 and "1.0.0" in row.split()  # the whole row, on one line
    hint = "published: ? = pass --catalog DIR (or set ACRELEASE_CATALOG) to compare with a catalog"
    assert hint in listing.stdout.splitlines()  # one line, not wrapped
    header = listing.stdout.splitlines()[0]
    assert header.startswith("demo-project-with-a-long-name-xx  targets:") and header.endswith("(ESP32-S3)")
    catalog = project / ("a-catalog-folder-whose-name-alone-is-longer-than-a-terminal-" * 2)
    published = run(project, "publish", "--catalog", str(catalog))
    assert published.returncode == 0, published.stderr
    assert f"Catalog {catalog} is at generation 1" in published.stdout.splitlines()


# -- TLS flags ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A certificate and its key, another key, and an encrypted key (the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("pem")

    def make(name: str, *extra: str) -> None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.pem"), *extra],
                       check=True, capture_output=True, timeout=60)

    make("cert", "-nodes")
    make("other", "-nodes")
    make("locked", "-passout", "pass:secret")
    return {"cert": folder / "cert.pem", "key": folder / "cert.key", "other_key": folder / "other.key",
            "locked_cert": folder / "locked.pem", "locked_key": folder / "locked.key"}


def serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``serve`` on 127.0.0.1 with a free port and a catalog folder; a bad flag must stop it at once."""
    (cwd / "cat").mkdir(exist_ok=True)
    return run(cwd, "serve", "--catalog", str(cwd / "cat"), "-b", "127.0.0.1", "-p", "0", *args, timeout=30)


def test_tls_key_without_cert_is_refused_not_served_as_http(tmp_path: Path, pem: dict[str, Path]) -> None:
    one_error(serve(tmp_path, "--tls-key", str(pem["key"])), 2, "--tls-key", "without --tls-cert")


def test_tls_cert_without_key_names_the_flag(tmp_path: Path, pem: dict[str, Path]) -> None:
    line = one_error(serve(tmp_path, "--tls-cert", str(pem["cert"])), 8, f"--tls-cert {pem['cert']}", "--tls-key")
    assert "PEM lib" not in line and "[SSL" not in line


def test_tls_missing_files_are_named_with_their_flag(tmp_path: Path, pem: dict[str, Path]) -> None:
    missing = tmp_path / "missing.pem"
    line = one_error(serve(tmp_path, "--tls-cert", str(missing), "--tls-key", str(pem["key"])), 8,
                     f"--tls-cert {missing}: no such file")
    assert "None" not in line
    one_error(serve(tmp_path, "--tls-cert", str(pem["cert"]), "--tls-key", str(missing)), 8,
              f"--tls-key {missing}: no such file")
    one_error(serve(tmp_path, "--tls-cert", "/dev/zero", "--tls-key", str(pem["key"])), 8,
              "--tls-cert /dev/zero: is a character device")


def test_tls_mismatched_and_encrypted_keys_are_one_line(tmp_path: Path, pem: dict[str, Path]) -> None:
    one_error(serve(tmp_path, "--tls-cert", str(pem["cert"]), "--tls-key", str(pem["other_key"])), 8,
              "cannot use this certificate and key", "--tls-key KEY.pem")
    # an encrypted key would make OpenSSL prompt for a passphrase: refused instead (stdin is not read)
    one_error(serve(tmp_path, "--tls-cert", str(pem["locked_cert"]), "--tls-key", str(pem["locked_key"])), 8,
              f"--tls-key {pem['locked_key']}", "encrypted")


def test_the_manifest_is_read_with_a_bound(project: Path, odd_paths: dict[str, Path]) -> None:
    fifo = odd_paths["a named pipe (FIFO)"]
    one_error(run(project, "list", "--manifest", str(fifo), timeout=30), 3, str(fifo), "is a named pipe")
    one_error(run(project, "list", "-m", "/dev/zero", timeout=30), 3, "/dev/zero", "is a character device")


# -- interrupted, and a reader that leaves ------------------------------------------------------

def _waits_on_stdin(pid: int) -> bool:
    try:
        return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_is_one_line_exit_130_and_writes_nothing(tmp_path: Path, as_json: bool) -> None:
    file = tmp_path / "devices.auth"
    process = clirun.popen("auth", "add", "fleet", "--file", str(file), *(["--json"] if as_json else []),
                           cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 30
        while not _waits_on_stdin(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _waits_on_stdin(process.pid):
            pytest.skip("cannot tell (no /proc wchan) when the command waits for the password on stdin")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130 and out == "" and "Traceback" not in err
    if as_json:
        assert json.loads(err) == {"error": "interrupted", "problems": ["interrupted"], "kind": "interrupted",
                                   "exit_code": 130}
    else:
        assert err.strip().splitlines() == ["acrelease: error: interrupted"]
    assert not file.exists()


def test_a_reader_that_left_is_no_traceback(tmp_path: Path) -> None:
    """``acrelease list | head -1`` once head has gone: stdout is a pipe nobody reads (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before anything was written
    try:
        process = clirun.popen("template", "--json", "releases.toml", cwd=tmp_path, stdout=write_end,
                               stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and err == ""


def test_paths_print_as_typed_not_as_markup(tmp_path: Path) -> None:
    manifest = "rel[bold]eases/[red]releases.toml"
    (tmp_path / "rel[bold]eases").mkdir()
    init = run(tmp_path, "init", "--name", "demo", "--target", "d1mini:esp8266", "-m", manifest)
    assert init.returncode == 0 and f"Wrote {manifest}: project demo" in init.stdout, init.stdout
    (tmp_path / "fw.bin").write_bytes(esp8266_image("1.0.0"))
    add = run(tmp_path, "add", "1.0.0", "fw.bin", "--target", "d1mini", "-m", manifest)
    assert add.stdout.splitlines() == [f"Recorded 1.0.0 for d1mini in {manifest}"], add.stdout
