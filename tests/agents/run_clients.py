"""Run Claude Code, Codex and OpenCode against a console of their own, as a user would.

    unshare --net python -m tests.agents.run_clients WORKDIR

sets up a console in WORKDIR as `make run` does (SQLite, the demo workspace, the
built-in simulator as upstream), with a key, some credit and the alias `claude-*` →
`mira`, serves it on loopback, runs each client's one-shot command with the
configuration the README gives, and prints one JSON object: each run's exit code and
output, and the console's log. Run in a network namespace of its own (as
tests/agents/test_clients.py does), nothing but loopback exists, so a client that
reached for anything else would fail here rather than leave the machine.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(__file__).resolve().parent / "node_modules" / ".bin"
CLIENT_SECONDS = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def console_env(work: Path) -> dict[str, str]:
    """What `make run` sets, with this run's own database and media; nothing inherited
    but PATH, so neither the test run's database nor its Redis is used."""
    return {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "HOME": str(work / "home"),
        "TMPDIR": str(work / "tmp"),
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "MEDIA_ROOT": str(work / "media"),
        "GATEWAY_JOURNAL_DIR": str(work / "journal"),
    }


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def wait_for(port: int, console: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if console.poll() is not None:
            raise SystemExit("The console stopped before it served.")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("The console did not start within a minute.")


def client_runs(base: str, key: str, work: Path) -> dict[str, tuple[list[str], dict]]:
    """Each client's command and environment, configured as the README says."""
    homes = {name: work / f"home-{name}" for name in ("claude", "codex", "opencode")}
    for home in homes.values():
        home.mkdir(parents=True)
    codex_config = homes["codex"] / ".codex" / "config.toml"
    codex_config.parent.mkdir()
    codex_config.write_text(
        'model = "mira"\nmodel_provider = "mira"\nweb_search = "disabled"\n'
        "check_for_update_on_startup = false\n\n"
        f'[model_providers.mira]\nname = "Mira Console"\nbase_url = "{base}/v1"\n'
        'env_key = "MIRA_API_KEY"\nwire_api = "responses"\n'
    )
    opencode_config = homes["opencode"] / ".config" / "opencode" / "opencode.json"
    opencode_config.parent.mkdir(parents=True)
    opencode_config.write_text(
        json.dumps(
            {
                "provider": {
                    "mira": {
                        "npm": "@ai-sdk/openai-compatible",
                        "name": "Mira Console",
                        "options": {"baseURL": f"{base}/v1", "apiKey": "{env:MIRA_API_KEY}"},
                        "models": {"mira": {"name": "Mira"}},
                    }
                },
                "model": "mira/mira",
                "autoupdate": False,
                "share": "disabled",
            }
        )
    )
    common = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "TERM": "dumb"}
    claude_env = common | {
        "HOME": str(homes["claude"]),
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_API_KEY": key,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    codex_env = common | {"HOME": str(homes["codex"]), "MIRA_API_KEY": key}
    opencode_env = common | {
        "HOME": str(homes["opencode"]),
        "MIRA_API_KEY": key,
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    }
    claude, codex, opencode = (str(BIN / name) for name in ("claude", "codex", "opencode"))
    return {
        # No --model: Claude Code asks for its own default model, which the alias maps.
        "claude": ([claude, "-p", "Say hello"], claude_env),
        "claude-tool": (
            [
                claude,
                "-p",
                "Use the Bash tool to run `echo claude-was-here`",
                "--allowedTools",
                "Bash",
            ],
            claude_env,
        ),  # fmt: skip
        "codex": ([codex, "exec", "--skip-git-repo-check", "Say hello"], codex_env),
        "codex-tool": (
            [
                codex,
                "exec",
                "--skip-git-repo-check",
                "Use exec_command to run `echo codex-was-here`",
            ],
            codex_env,
        ),  # fmt: skip
        "opencode": ([opencode, "run", "Say hello"], opencode_env),
    }


def main(work: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True)
    for folder in ("home", "tmp", "media", "journal", "project"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    env = console_env(work)
    manage(env, "migrate", "--noinput")
    manage(env, "demo")
    key = manage(env, "createapikey", "--workspace", "demo", "--name", "coding agents")
    manage(env, "grantcredit", "--workspace", "demo", "--amount", "100", "--note", "agents")
    manage(env, "alias", "--workspace", "demo", "claude-*", "mira")
    port = free_port()
    log_path = work / "console.log"
    with log_path.open("w") as log:
        console = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    runs = {}
    try:
        wait_for(port, console)
        for name, (command, client_env) in client_runs(
            f"http://127.0.0.1:{port}", key, work
        ).items():
            try:
                done = subprocess.run(
                    command, cwd=work / "project", env=client_env, capture_output=True,
                    text=True, timeout=CLIENT_SECONDS, stdin=subprocess.DEVNULL,
                )  # fmt: skip
                runs[name] = {"code": done.returncode, "stdout": done.stdout,
                              "stderr": done.stderr[-4000:]}  # fmt: skip
            except subprocess.TimeoutExpired as expired:
                runs[name] = {
                    "code": None,
                    "stdout": str(expired.stdout or ""),
                    "stderr": "timeout",
                }
    finally:
        console.terminate()
        console.wait(timeout=30)
    print(json.dumps({"runs": runs, "log": log_path.read_text()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
