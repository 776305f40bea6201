"""CLI behaviour that needs no server: start-up cost, option parsing, and the error when no server answers."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from vlserve.cli import app, image_part, parse_extra_options
from vlserve.client import ClientError

runner = CliRunner()


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, vlserve.cli; print(any(m in sys.modules for m in ('torch', 'transformers', 'vllm')))"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    assert out.stdout.strip() == "False"
    assert elapsed < 5  # generous for a loaded CI box; measured ~0.3 s; the real check is the import list above


@pytest.mark.parametrize(
    "verb", ["serve", "launch", "list", "terminate", "chat", "registrations", "register", "unregister", "cached",
             "remove-cache", "twin"],
)
def test_every_verb_has_help(verb):
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_launch_help_shows_the_seed_flags():
    output = runner.invoke(app, ["launch", "--help"], terminal_width=200).output
    for flag in ("--model-engine", "--model-name", "--size-in-billions", "--model-format", "--quantization"):
        assert flag in output


def test_extra_options_are_typed():
    args = ["--max_model_len", "8192", "--enforce-eager", "true", "--dtype=float32", "--limit", '{"image": 4}']
    assert parse_extra_options(args) == {
        "max_model_len": 8192, "enforce_eager": True, "dtype": "float32", "limit": {"image": 4},
    }


@pytest.mark.parametrize("args", [["stray"], ["--flag"], ["--a", "--b", "1"]])
def test_extra_options_reject_malformed(args):
    with pytest.raises(typer.BadParameter):
        parse_extra_options(args)


def test_image_part_encodes_local_files(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG fake")
    part = image_part(str(path))
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == b"\x89PNG fake"
    assert image_part("https://example.com/a.jpg")["image_url"]["url"] == "https://example.com/a.jpg"
    with pytest.raises(ClientError, match="neither an http"):
        image_part(str(tmp_path / "missing.png"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv", [["list"], ["terminate", "-u", "x"], ["cached"], ["chat", "-u", "x", "-m", "hi"]])
def test_no_server_gives_one_line_that_says_how_to_start_one(argv):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, [*argv, "--endpoint", endpoint])
    assert result.exit_code == 1
    assert "vlserve serve" in result.output
    assert "Traceback" not in result.output
