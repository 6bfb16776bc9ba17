"""``mask2former serve`` on the command line: --help without the serve extra, one-line errors
(missing extra, port in use, bad model, bad option), and a real server process (one worker
and several) answering /healthz and a segmentation, then stopping on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mask2former.cli import main

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_needs_no_extra():
    """--help runs with FastAPI, uvicorn and python-multipart unimportable."""
    code = (
        "import sys\n"
        "for m in ('fastapi', 'uvicorn', 'python_multipart'): sys.modules[m] = None\n"
        "from mask2former.cli import main\n"
        "sys.exit(main(['serve', '--help']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for option in ("--host", "--port", "--workers", "--max-batch", "--queue-size", "--backend"):
        assert option in out.stdout


def test_missing_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install 'mask2former[serve]'" in err and "uvicorn" in err


def test_port_in_use_is_one_line(capsys):
    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"mask2former serve: error: cannot listen on 127.0.0.1:{port} " + (
        "(Address already in use)"
    )


def test_bad_model_and_options(capsys, tmp_path):
    pytest.importorskip("uvicorn")
    assert main(["serve", "--model", str(tmp_path / "none"), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none" in err and "Traceback" not in err
    for bad in (["--port", "70000"], ["--max-batch", "0"], ["--queue-size", "x"]):
        assert main(["serve", *bad]) == 2
        assert "(see --help)" in capsys.readouterr().err


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post_image(url: str, path: Path) -> dict:
    boundary = "mask2formertest"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_process_answers_and_stops(workers):
    pytest.importorskip("uvicorn")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "mask2former", "serve", "--port", str(port),
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:  # the model loads first (in every worker)
            try:
                assert _get(url + "/healthz")["status"] == "ok"
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        assert _get(url + "/v1/model")["model"] == "shapes"
        record = _post_image(url + "/v1/segment", ROOT / "examples" / "shapes.png")
        assert record["image"] == "shapes.png" and len(record["segments"]) >= 5
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
    assert "Traceback" not in output
    assert f"on http://127.0.0.1:{port}" in output
