"""msa-serve's command line: bad arguments and a busy port are one line and exit code 2, before any
model loads (the running service is exercised in tests/e2e/test_serve_e2e.py)."""
from __future__ import annotations

import socket

import pytest

from msa.pipeline.cli.serve import loopback, main


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msa-serve: error:"), err
    return err[0]


def test_a_busy_port_is_one_line(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in error_line(capsys)


@pytest.mark.parametrize("args,needle", [
    (["--workers", "0"], "at least 1"),
    (["--max-upload-mb", "0"], "must be positive"),
    (["--allow-root", "/no/such/folder"], "--allow-root: no such folder"),
    (["--bundle", "/no/such/bundle"], "has no bundle.json"),
    (["--segments", "-5"], "--segments: expected a positive number"),
    (["--segments", "nan"], "--segments: expected a positive number"),
])
def test_bad_arguments_are_one_line(capsys, args, needle):
    assert main([*args, "--port", "0"]) == 2
    assert needle in error_line(capsys)


def test_loopback_hosts():
    assert loopback("127.0.0.1") and loopback("localhost") and loopback("::1") and loopback("127.0.0.2")
    assert not loopback("0.0.0.0") and not loopback("192.168.1.4") and not loopback("example.org")
