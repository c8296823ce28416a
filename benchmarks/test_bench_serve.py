"""The benchmark's own parts: reading wrk, spreads, per-round ratios, goals, CPU from /proc, launchers.

They run with the rest of the suite (the project's ``testpaths`` holds ``tests`` and ``benchmarks``).
The tests that start nginx or wrk skip where they are not installed; the one end-to-end run
(``slow``) measures for about a second per server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks import bench_serve as bench
from benchmarks.harness import MachineCpu, Spread, parse_wrk, running, tree_cpu_seconds

WRK_CHECK = """Running 2s test @ http://127.0.0.1:54785/update/demo/d1mini
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.39ms    7.17ms  70.44ms   73.82%
    Req/Sec     1.95k   444.60     2.71k    68.42%
  Latency Distribution
     50%  813.00us
     75%   18.07ms
     90%   22.92ms
     99%    1.09s
  4083 requests in 2.11s, 606.07KB read
  Socket errors: connect 3, read 4083, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   1932.32
Transfer/sec:    286.83KB
"""


def test_wrk_output_is_read_with_its_units_and_only_real_socket_errors_count() -> None:
    result = parse_wrk(WRK_CHECK)
    assert (result.requests_per_s, result.requests, result.seconds) == (1932.32, 4083, 2.11)
    assert result.p50_ms == pytest.approx(0.813)
    assert (result.p90_ms, result.p99_ms) == (22.92, 1090.0)
    # a read error ends every Connection: close exchange; connect and timeout errors are failures
    assert (result.errors, result.bad_status) == (5, 7)


def test_unreadable_wrk_output_stops_the_run_with_what_wrk_said() -> None:
    with pytest.raises(SystemExit, match="cannot read wrk's output:\nunable to connect"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_a_spread_is_median_min_and_max_and_ignores_what_was_not_measured() -> None:
    spread = Spread.of([3.0, 1.0, float("nan"), 10.0])
    assert spread == Spread(3.0, 1.0, 10.0, 3)
    assert spread.show(1, "x") == "3.0x (1.0x-10.0x)"
    assert Spread.of([2.0, 4.0]) == Spread(3.0, 2.0, 4.0, 2)
    assert Spread.of([]) is None and Spread.of([float("nan")]) is None
    assert Spread.of([21_900.4]).show() == "21,900"  # type: ignore[union-attr]


def measure(round_: int, server: str, rate: float, p99: float = 1.0, cpu: float | None = 10.0,
            scenario: str = "check", concurrency: int = 50) -> bench.Measure:
    return bench.Measure(round_, 0, scenario, concurrency, server, "", rate, 1000, 1.0, 0.5, 0.8, p99, 0, 0,
                         0.01, cpu, 0.01, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0), "")


def test_ratios_pair_servers_within_a_round_never_across_rounds() -> None:
    # Round 2 ran on a machine twice as busy: both servers halved, the ratio did not move.
    measures = [measure(1, "nginx", 20_000), measure(1, "acrelease", 16_000),
                measure(2, "acrelease", 8_000), measure(2, "nginx", 10_000),
                measure(3, "acrelease", 9_000)]  # round 3 lost its nginx measure: no ratio from it
    assert bench.ratios(measures, "check", 50, "acrelease", "nginx", "rate") == [0.8, 0.8]
    assert bench.ratios(measures, "check", 200, "acrelease", "nginx", "rate") == []


def test_goals_use_the_median_ratio_and_say_when_they_were_not_measured() -> None:
    measures = [measure(r, "nginx", 10_000, p99=5.0) for r in (1, 2, 3)]
    measures += [measure(1, "acrelease", 7_000, p99=9.0), measure(2, "acrelease", 8_000, p99=9.0),
                 measure(3, "acrelease", 9_000, p99=9.0)]
    measures += [measure(r, "x", 1, scenario="check", concurrency=200) for r in (1, 2, 3)]
    verdicts = {v["goal"]: v for v in bench.judge(measures, {"peak_mib": 151.0})}
    checks = verdicts["checks >= 0.75x nginx (c=50)"]
    assert checks["met"] is True and checks["ratio"] == Spread(0.8, 0.7, 0.9, 3)
    assert (checks["rounds_met"], checks["rounds"]) == (2, 3)  # the median met it, one round did not
    assert verdicts["check p99 at c=200 <= 2x nginx"]["met"] is None  # c=200 had no acrelease/nginx pair
    assert verdicts["1 MiB downloads >= 0.9x nginx (c=50)"]["met"] is None
    assert verdicts["RSS < 150 MiB with 200 downloads of 16 MiB"]["met"] is False
    assert bench.judge([], {})[-1]["met"] is None


def test_the_summary_reports_every_figure_and_ratio_as_a_spread() -> None:
    measures = [measure(1, "nginx", 20_000, cpu=20.0), measure(1, "acrelease", 15_000, cpu=44.0),
                measure(2, "acrelease", 10_000, cpu=46.0), measure(2, "nginx", 10_000, cpu=21.0)]
    servers = [s for s in bench.SERVERS if s.name in ("nginx", "acrelease")]
    rows = {row["server"]: row for row in bench.summarize(measures, servers)}
    assert rows["acrelease"]["requests_per_s"] == Spread(12_500, 10_000, 15_000, 2)
    assert rows["acrelease"]["vs"]["nginx"]["rate"] == Spread(0.875, 0.75, 1.0, 2)
    assert rows["acrelease"]["vs"]["nginx"]["cpu"].median == pytest.approx((44 / 20 + 46 / 21) / 2)
    assert rows["nginx"]["vs"] == {}


def test_the_readme_tables_carry_every_row_and_an_honest_verdict() -> None:
    measures = [measure(1, "nginx", 20_000), measure(1, "acrelease", 12_000),
                measure(2, "acrelease", 11_000), measure(2, "nginx", 10_000)]
    servers = [s for s in bench.SERVERS if s.name in ("nginx", "acrelease")]
    table = bench.markdown(bench.summarize(measures, servers), bench.judge(measures, {}))
    assert "| check, c=50 | nginx | 15,000 (10,000\u201320,000) |" in table
    assert "| | acrelease / nginx | 0.85x (0.60x\u20131.10x) |" in table
    assert "| checks ≥ 0.75x nginx (c=50) | 0.85x (0.60x\u20131.10x) | 1 of 2 | met |" in table
    assert "| 1 MiB downloads ≥ 0.9x nginx (c=50) |  |  | not measured |" in table


def test_tree_cpu_counts_live_and_reaped_descendants(tmp_path: Path) -> None:
    # parent (idle) -> child: runs one burner to its end (reaped: the child's cutime), then starts a
    # second that stays alive (its own stat). Each burns 0.3 s of CPU.
    burn = "import sys, time\nend = time.process_time() + 0.3\nwhile time.process_time() < end:\n    pass\n"
    (tmp_path / "burn.py").write_text(burn + "if sys.argv[1:] == ['stay']:\n    time.sleep(30)\n")
    (tmp_path / "child.py").write_text("import subprocess, sys, time\nsubprocess.run([sys.executable, 'burn.py'])\n"
                                       "subprocess.Popen([sys.executable, 'burn.py', 'stay'])\ntime.sleep(30)\n")
    (tmp_path / "parent.py").write_text("import subprocess, sys, time\n"
                                        "subprocess.Popen([sys.executable, 'child.py'])\ntime.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "parent.py"], cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while tree_cpu_seconds([parent.pid]) < 0.6 and time.monotonic() < deadline:
            time.sleep(0.1)
        spent = tree_cpu_seconds([parent.pid])
        assert 0.6 <= spent < 5
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the group this test started, nothing else
        parent.wait()


def test_machine_cpu_moves_forward_when_this_process_works() -> None:
    before = MachineCpu.read()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    spent = MachineCpu.read() - before
    assert spent.process >= 0.15 and spent.softirq >= 0 and spent.steal >= 0


def test_acrelease_variants_run_this_checkout(tmp_path: Path) -> None:
    setup = bench.Setup(tmp_path, tmp_path / "catalog", tmp_path / "devices.auth")
    (proc,) = next(s for s in bench.SERVERS if s.name == "acrelease-auth").launch(setup)
    assert proc.command[:4] == [sys.executable, "-m", "acrelease", "serve"]
    assert proc.command[-2:] == ["--auth", str(setup.credentials)]
    where = subprocess.run([sys.executable, "-c", "import acrelease; print(acrelease.__file__)"], cwd=tmp_path,
                           env={**proc.env}, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(bench.ROOT)


def one_answer(port: int, scenario: bench.Scenario, server: str) -> bytes:
    """One request of ``scenario`` as wrk sends it to ``server``, on a fresh connection."""
    target = scenario.path_for(server)
    head = "".join(f"{k}: {v}\r\n" for k, v in scenario.headers())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("taskset") is None,
                    reason="nginx not installed (apt-get install -y nginx)")
def test_nginx_and_acrelease_answer_each_scenario_as_the_benchmark_expects() -> None:
    # as bench_serve does: a folder nginx's unprivileged worker can read (pytest's tmp_path is 0700 for root)
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-test-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        answers_as_expected(tmp_path)


def answers_as_expected(tmp_path: Path) -> None:
    setup = bench.Setup(tmp_path, tmp_path / "catalog", tmp_path / "devices.auth")
    bench.build_catalog(setup.catalog)
    for server in ("nginx", "acrelease"):
        procs = next(s for s in bench.SERVERS if s.name == server).launch(setup)
        with running(procs, tmp_path, server) as pids:
            assert pids and all(Path(f"/proc/{pid}").exists() for pid in pids)
            port = procs[-1].port
            check, download = (next(s for s in bench.SCENARIOS if s.name == n) for n in ("check", "download"))
            assert one_answer(port, check, server).split(b"\r\n", 1)[0].endswith(b" 304 Not Modified")
            answer = one_answer(port, download, server)
            assert answer.split(b"\r\n", 1)[0].endswith(b" 200 OK") and len(answer) > 1 << 20
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)  # stopped and waited for


def test_placeholders_leave_nginx_variables_and_braces_alone() -> None:
    text = "location / { proxy_pass http://{upstream}; add_header x-MD5 $upstream_http_x_md5; root {catalog}; }"
    assert bench.fill(text, upstream="127.0.0.1:9", catalog="/c") == (
        "location / { proxy_pass http://127.0.0.1:9; add_header x-MD5 $upstream_http_x_md5; root /c; }")


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("taskset") is None,
                    reason="nginx not installed (apt-get install -y nginx)")
def test_a_variant_can_put_nginx_in_front_of_acrelease() -> None:
    proxied = bench.nginx("    location / { proxy_pass http://{upstream}; proxy_http_version 1.0; }\n",
                          upstream=bench.acrelease("--log", "WARNING"))
    with tempfile.TemporaryDirectory(prefix="acrelease-bench-test-") as tmp:
        workdir = Path(tmp)
        setup = bench.Setup(workdir, workdir / "catalog", workdir / "devices.auth")
        bench.build_catalog(setup.catalog)
        procs = proxied(setup)
        assert [p.command[0] for p in procs] == [sys.executable, shutil.which("nginx")]  # upstream first
        with running(procs, workdir, "proxied") as pids:
            check = next(s for s in bench.SCENARIOS if s.name == "check")
            assert one_answer(procs[-1].port, check, "nginx-proxy").split(b"\r\n", 1)[0].endswith(b" 304 Not Modified")
            assert len(pids) == 2  # both count in the variant's CPU per request


def test_a_wrong_scenario_or_concurrency_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, said in ((["--scenarios", "check,fleat"], "unknown scenario 'fleat'"),
                       (["--concurrency", "50,lots"], "--concurrency '50,lots': expected numbers")):
        with pytest.raises(SystemExit) as stopped:
            bench.parse_args(argv)
        assert stopped.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("nginx") is None,
                    reason="wrk and nginx not installed (apt-get install -y wrk nginx)")
def test_a_short_run_writes_every_raw_measure_and_a_summary_that_reprints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--duration", "1", "--runs", "2", "--concurrency", "4", "--scenarios", "check", "--warmup", "0",
                "--no-rss", "--results", str(tmp_path)])
    (written,) = tmp_path.glob("serve-*.json")
    saved = json.loads(written.read_text())
    assert [(m["round"], m["server"]) for m in saved["measures"]] == [
        (1, "nginx"), (1, "acrelease"), (2, "acrelease"), (2, "nginx")]  # the order reversed in round 2
    for m in saved["measures"]:
        assert m["requests"] > 0 and m["cpu_us_per_request"] > 0 and "Requests/sec" in m["wrk_output"]
        assert m["errors"] == 0 and m["bad_status"] == 0
    (row,) = [r for r in saved["summary"] if r["server"] == "acrelease"]
    assert row["vs"]["nginx"]["rate"]["n"] == 2
    first = capsys.readouterr().out
    bench.main(["--report", str(written)])
    again = capsys.readouterr().out
    assert first[first.index("median (min-max)"):first.index("written:")].strip() in again
