"""A newcomer's first hour, as the README tells it: every fenced `manage.py` line
works as written after the serve command, `serve` makes an admin login when asked,
and served on every interface it prints a URL whose admin answers."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import ROOT, free_port, server_env, wait_healthy
from .data_templates import TEMPLATES

pytestmark = pytest.mark.e2e

# The set-up commands (venv, pip, serve / pytest) are run by test_serve and CI.
# Not run here: the README's set-up and test commands, and the production
# commands, which need PostgreSQL, Redis and other machines (tests/test_deployment.py
# and tests/test_serve_workers.py run that topology).
SETUP_MARKERS = {"<!-- serve-command -->", "<!-- test-command -->", "<!-- production-commands -->"}
FILE_MARKER = re.compile(r"<!-- file: (?P<name>[\w.-]+) -->")
DOWNLOAD = re.compile(r"\bhf download \S+ --local-dir (?P<dir>\S+)")


@dataclass
class Block:
    marker: str  # the HTML comment right above the fence, or ""
    info: str  # the fence's language
    body: str


def fenced_blocks(text: str) -> list[Block]:
    blocks, lines, marker = [], iter(text.splitlines()), ""
    for line in lines:
        if line.startswith("```"):
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            blocks.append(Block(marker, line[3:].strip(), "\n".join(body)))
        if line.strip():
            marker = line.strip() if line.startswith("<!--") else ""
    return blocks


def readme_steps() -> list[tuple[str, str]]:
    """(kind, text) in the README's order: files it shows, downloads, manage.py lines."""
    steps = []
    for block in fenced_blocks((ROOT / "README.md").read_text()):
        if block.marker in SETUP_MARKERS:
            continue
        if named := FILE_MARKER.fullmatch(block.marker):
            steps.append(("file", f"{named['name']}\n{block.body}"))
            continue
        for line in block.body.splitlines():
            if DOWNLOAD.search(line):
                steps.append(("download", line))
            elif "manage.py" in line:
                steps.append(("command", line))
    return steps


def test_the_readme_shows_commands_to_run() -> None:
    kinds = [kind for kind, _ in readme_steps()]
    assert kinds.count("command") >= 10 and "file" in kinds and "download" in kinds
    commands = [text for kind, text in readme_steps() if kind == "command"]
    # As written after the serve command: the virtual environment is not activated.
    assert all(".venv/bin/python manage.py" in line for line in commands), commands


def test_every_manage_py_line_of_the_readme_works_as_written(
    tmp_path: Path, demo_model_path: Path
) -> None:
    """Each line runs in bash, in a directory that looks like the checkout (its
    manage.py and .venv), on a data dir of its own, after the serve command.
    `serve` lines get --dry-run (they would serve forever); a download is played
    by copying the demo model where the line puts the model (no network here)."""
    import shutil

    (tmp_path / "manage.py").symlink_to(ROOT / "manage.py")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    data = tmp_path / "data"
    env = server_env(data, DJANGO_SUPERUSER_PASSWORD="readme-Pa55word-4417")
    if not TEMPLATES.copy("demo", data):  # what the serve command leaves, made faster
        pytest.fail("no session templates")

    def run(line: str) -> None:
        line = line.replace("manage.py serve", "manage.py serve --dry-run")
        done = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"

    run(".venv/bin/python manage.py serve")
    ran = []
    for kind, text in readme_steps():
        if kind == "file":
            name, _, body = text.partition("\n")
            (tmp_path / name).write_text(body + "\n")
        elif kind == "download":
            match = DOWNLOAD.search(text)
            assert match is not None
            target = Path(match["dir"].replace("data/", f"{data}/", 1))
            shutil.copytree(demo_model_path, target)
        else:
            run(text)
            ran.append(text)
    assert any("import_config my-model.yaml" in line for line in ran)
    assert (tmp_path / "routing.yaml").is_file()  # export_config wrote where it said


def start_serve(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], Path]:
    data = tmp_path / "data"
    assert TEMPLATES.copy("demo", data)
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", *args],
        cwd=ROOT, env=server_env(data, **env), stdout=log.open("w"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    return process, log


def test_serve_on_every_interface_prints_a_url_whose_admin_answers(tmp_path: Path) -> None:
    port = free_port()
    password = "boss-Pa55word-9921"
    process, log = start_serve(
        tmp_path, "--host", "0.0.0.0", "--port", str(port), "--admin", "boss",
        DJANGO_SUPERUSER_PASSWORD=password,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, log.read_text, 120)
        printed = log.read_text()
        admin = re.search(r"admin: (http://\S+/admin/)  \(log in as boss\)", printed)
        assert admin is not None, printed
        url = admin.group(1)
        assert urlsplit(url).hostname not in ("0.0.0.0", "::") and urlsplit(url).port == port
        assert f"The gateway is starting on http://{urlsplit(url).netloc}" in printed

        with httpx.Client(base_url=url, timeout=10) as browser:
            form = browser.get("login/")
            assert form.status_code == 200, form.text[:500]
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
            assert token is not None
            logged_in = browser.post(
                "login/",
                data={"csrfmiddlewaretoken": token.group(1), "username": "boss",
                      "password": password, "next": "/admin/"},
                headers={"Referer": f"{url}login/"},
            )  # fmt: skip
            assert logged_in.status_code == 302, logged_in.text[:500]
            index = browser.get("")
            assert index.status_code == 200 and "Live dashboard" in index.text
        # Any other name is still refused: the printed one was added, nothing more.
        other = httpx.get(
            f"http://127.0.0.1:{port}/admin/login/", headers={"Host": "not-listed.example"}
        )
        assert other.status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_serve_admin_needs_a_password_when_nobody_can_be_asked(tmp_path: Path) -> None:
    process, log = start_serve(tmp_path, "--dry-run", "--admin", "boss")
    assert process.wait(timeout=120) == 1
    assert "DJANGO_SUPERUSER_PASSWORD" in log.read_text()
    again, log = start_serve(tmp_path, "--dry-run", "--no-admin")
    assert again.wait(timeout=120) == 0
    printed = log.read_text()
    assert "no login yet:" in printed and "manage.py createsuperuser" in printed


def test_serve_offers_an_admin_login_on_a_first_run_in_a_terminal(tmp_path: Path) -> None:
    """In a terminal, with no superuser yet, serve asks; yes runs Django's
    createsuperuser, and the admin line names the new login."""
    import os
    import pty

    data = tmp_path / "data"
    assert TEMPLATES.copy("demo", data)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--dry-run", "--port", "8126"],
        cwd=ROOT, env=server_env(data), stdin=terminal, stdout=terminal, stderr=terminal,
        start_new_session=True,  # no controlling terminal: getpass reads the pty
    )  # fmt: skip
    os.close(terminal)
    seen = ""

    def answer(prompt: str, reply: str) -> None:
        nonlocal seen
        deadline = time.monotonic() + 120
        while prompt not in seen:
            assert time.monotonic() < deadline, seen
            try:
                seen += os.read(controller, 4096).decode(errors="replace")
            except OSError:  # the other side closed
                raise AssertionError(seen) from None
        seen = seen.split(prompt, 1)[1]
        os.write(controller, reply.encode() + b"\n")

    try:
        answer("Make one now? [Y/n]", "y")
        answer("Username", "boss")
        answer("Email address:", "")
        answer("Password:", "first-hour-Pa55-7310")
        answer("Password (again):", "first-hour-Pa55-7310")
        with contextlib.suppress(OSError):  # to the end: EIO once serve has exited
            while chunk := os.read(controller, 4096):
                seen += chunk.decode(errors="replace")
        assert process.wait(timeout=60) == 0, seen
        assert "Superuser created successfully." in seen
        assert "(log in as boss)" in seen, seen
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
