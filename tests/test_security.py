"""What a hostile job or template can reach (SPEC §8, docs/security.md), tried with real processes and files.

Each test is one threat of issue 18: the job's environment, injection through job variables, `{{ $NAME }}`,
file modes, and what a job's words can do to an operator's terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import deployments, pools
from dispatcher.apply import apply
from dispatcher.callbacks import SECRET_ENV, master_secret, run_token
from dispatcher.config import Settings
from dispatcher.dispatch import Dispatcher
from dispatcher.errors import InvalidInput, TemplateError
from dispatcher.models import FlowRun, utcnow
from dispatcher.providers.base import JobState, Providers
from dispatcher.providers.process import ProcessProvider
from dispatcher.store import DEFAULT_URL, open_store
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.templating import TEMPLATE_ENV, render

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "process.json"

SECRETS = {
    SECRET_ENV: "master-secret-value",
    "PUSHPOOL_API_TOKEN": "api-token-value",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_SESSION_TOKEN": "aws-session-value",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secret/gcp.json",
    "AZURE_CLIENT_SECRET": "azure-secret-value",
    "OPERATOR_ONLY_SETTING": "operator-value",
}


class World:
    """A SQLite store, a process pool `p` with deployment `d`, and a dispatcher whose environment holds secrets."""

    def __init__(self, tmp_path: Path, template: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.store = SQLiteStore(str(tmp_path / "s.db"))
        self.provider = ProcessProvider(tmp_path / "procs")
        self.dispatcher = Dispatcher(
            self.store,
            providers=Providers({"process": self.provider}),
            settings=Settings(provider_timeout_seconds=10.0),
            callback_base_url="http://127.0.0.1:9",  # nothing listens: the runner's report fails fast
        )
        pools.create_pool(self.store, "p", base_job_template=template)

    def run(self, job_variables: dict[str, Any]) -> FlowRun:
        """Create a run of `d` with these variables, dispatch it, and wait for its process to end."""
        if self.store.get_deployment("d") is None:
            deployments.create_deployment(self.store, "d", pool="p")
        run = deployments.run_deployment(
            self.store, "d", job_variables=job_variables, scheduled_time=utcnow() - timedelta(seconds=1)
        )
        summary = self.dispatcher.run_pass(pool="p")
        assert run.id in summary.submitted, summary
        stored = self.store.get_run(run.id)
        assert stored is not None and stored.infrastructure_id
        deadline = time.monotonic() + 20
        while self.provider.status(stored.infrastructure_id).state in (JobState.PENDING, JobState.RUNNING):
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.05)
        return stored

    def close(self) -> None:
        self.dispatcher.close()
        for pid_file in self.provider.state_dir.glob("*/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        self.store.close()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    w = World(tmp_path)
    yield w
    w.close()


# 1. a job's environment ------------------------------------------------------------------------------------
def test_a_process_job_sees_its_env_and_its_own_token_and_nothing_of_the_dispatcher(world: World) -> None:
    out = world.tmp_path / "env.json"
    dump = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    run = world.run({"command": [sys.executable, "-c", dump], "env": {"GREETING": "hello"}})
    seen = json.loads(out.read_text())

    for name, value in SECRETS.items():
        assert name not in seen, name
        assert value not in json.dumps(seen), name
    assert seen["GREETING"] == "hello"
    assert seen["PUSHPOOL_RUN_ID"] == run.id
    assert seen["PUSHPOOL_CALLBACK_TOKEN"] == run_token(master_secret(world.store), run.deployment_id, run.id)
    assert seen["PATH"] == os.environ["PATH"]
    # Nothing beyond the job's env, the run context and the documented basics.
    extra = {
        name
        for name in seen
        if not name.startswith(("PUSHPOOL_", "LC_"))
        and name not in {"GREETING", "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR"}
    }
    assert extra == set()


# 4. file modes ---------------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_store_and_the_directories_made_for_it_are_private(tmp_path: Path, umask_022: None) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "made" / "by-pushpool" / "s.db"
    store = SQLiteStore(str(path))
    secret = master_secret(store)  # the secret generated and kept in the store
    assert secret
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    for suffix in ("-wal", "-shm"):
        assert _mode(Path(f"{path}{suffix}")) == 0o600, suffix
    assert _mode(tmp_path) == 0o755  # the user's own directory above is theirs
    store.close()


def test_an_existing_default_store_left_readable_is_narrowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(SECRET_ENV, raising=False)
    home = tmp_path / ".pushpool"
    home.mkdir(mode=0o755)
    old = SQLiteStore(str(home / "pushpool.db"))
    master_secret(old)
    old.close()
    for path, mode in [(home, 0o755), (home / "pushpool.db", 0o644), (home / "pushpool.db-wal", 0o664)]:
        path.touch()
        os.chmod(path, mode)

    store = open_store(DEFAULT_URL)
    assert _mode(home) == 0o700
    assert _mode(home / "pushpool.db") == 0o600
    assert _mode(home / "pushpool.db-wal") == 0o600
    store.close()


def test_a_store_in_a_directory_the_user_chose_is_private_but_the_directory_is_left(
    tmp_path: Path, umask_022: None
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    store = SQLiteStore(str(shared / "s.db"))
    assert _mode(shared / "s.db") == 0o600 and _mode(shared) == 0o755
    store.close()


def test_process_state_and_run_directories_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PUSHPOOL_PROCESS_DIR", raising=False)
    (tmp_path / ".pushpool").mkdir(mode=0o755)
    (tmp_path / ".pushpool" / "processes").mkdir(mode=0o755)  # as an older version left it
    provider = ProcessProvider()
    infra_id = provider.submit({"command": [sys.executable, "-c", "pass"]}, idempotency_key="run-modes")
    assert _mode(provider.state_dir) == 0o700
    assert _mode(provider.run_dir(infra_id)) == 0o700
    deadline = time.monotonic() + 20
    while provider.status(infra_id).state in (JobState.PENDING, JobState.RUNNING):
        assert time.monotonic() < deadline
        time.sleep(0.05)


# 2. no injection through job variables -------------------------------------------------------------------
def process_template(command: Any) -> dict[str, Any]:
    """The default process template with `command` written by the pool and a `target` variable."""
    template: dict[str, Any] = json.loads(TEMPLATE.read_text())
    template["job_configuration"]["command"] = command
    template["variables"]["properties"]["target"] = {"type": "string"}
    return template


def test_a_value_in_a_sh_c_script_is_one_word_never_shell_syntax(tmp_path: Path, world: World) -> None:
    """The issue's attack, run as a real process: the value is echoed, `id` never runs."""
    proof = tmp_path / "X"
    template = process_template("sh -c 'cd /tmp && echo deploying {{ target }}'")
    pools.update_pool(world.store, "p", base_job_template=template)
    run = world.run({"target": f"prod; id > {proof}"})
    assert run.infrastructure_id is not None
    assert world.provider.status(run.infrastructure_id).state is JobState.COMPLETED
    assert not proof.exists()
    assert f"deploying prod; id > {proof}" in world.provider.logs(run.infrastructure_id)
    # $(...), backticks, quotes and newlines stay text too.
    nasty = f"$(touch {proof}) `touch {proof}` ' \" \n touch {proof}"
    run = world.run({"target": nasty})
    assert not proof.exists()
    assert world.provider.logs(run.infrastructure_id or "").count(f"touch {proof}") >= 3


def test_a_value_with_spaces_stays_one_argument_without_a_shell(tmp_path: Path, world: World) -> None:
    script = tmp_path / "argv.py"
    out = tmp_path / "argv.json"
    script.write_text(f"import json, sys; open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))")
    template = process_template(f"{sys.executable} {script} --target={{{{ target }}}} {{{{ target }}}} end")
    pools.update_pool(world.store, "p", base_job_template=template)
    world.run({"target": "prod --force  'x' ; rm -rf /"})
    assert json.loads(out.read_text()) == [
        "--target=prod --force  'x' ; rm -rf /",
        "prod --force  'x' ; rm -rf /",
        "end",
    ]


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("""sh -c 'echo "{{ target }}"'""", ["{{ target }}", "inside double quotes", "write it bare"]),
        (["bash", "-lc", "echo '{{ target }}'"], ["{{ target }}", "inside single quotes"]),
        (["/bin/sh", "-c", "echo \\{{ target }}"], ["{{ target }}", "right after"]),
        (["sh", "-c", "echo hi # {{ target }}"], ["in a comment"]),
        (["sh", "-c", "echo `echo {{ target }}`"], ["inside backticks"]),
        (["sh", "-c", "cat <<EOF\n{{ target }}\nEOF"], ["here-document"]),
        (["fish", "-c", "echo {{ target }}"], ["fish script"]),
        ("python3 -c 'print({{ target }})'", ["{{ target }}", "code that python3 runs"]),
        (["env", "A=1", "perl", "-e", "print {{ target }}"], ["code that perl runs"]),
        ("sh -c 'echo {{ target }}", ["cannot be split"]),
    ],
)
def test_a_template_where_quoting_cannot_keep_a_value_one_word_is_refused_when_written(
    tmp_path: Path, command: Any, words: list[str]
) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"))
    with pytest.raises(TemplateError) as refused:
        pools.create_pool(store, "p", base_job_template=process_template(command))
    message = str(refused.value)
    assert message.startswith("job_configuration.command: ")
    for word in words:
        assert word in message
    assert store.get_pool("p") is None
    store.close()


def test_command_rendering_quotes_scripts_and_keeps_arguments_whole() -> None:
    values = {"target": "a b; c", "n": 3}
    config = {
        "command": "sh -ec 'deploy {{ target }} --n {{ n }}' sh {{ target }}",
        "containers": [{"entryPoint": ["/bin/bash", "-c"], "command": ["run {{ target }}"]}],
        "listed": {"command": ["echo", "{{ target }}", "x{{ target }}", "{{ missing }}"]},
        "plain": {"command": "echo {{ target }}", "other": "echo {{ target }}"},
    }
    assert render(config, values, {}) == {
        "command": ["sh", "-ec", "deploy 'a b; c' --n 3", "sh", "a b; c"],
        "containers": [{"entryPoint": ["/bin/bash", "-c"], "command": ["run 'a b; c'"]}],
        "listed": {"command": ["echo", "a b; c", "xa b; c"]},
        "plain": {"command": ["echo", "a b; c"], "other": "echo a b; c"},
    }


# 3. {{ $NAME }} reads only what the operator allows ---------------------------------------------------------
def env_template(name: str) -> dict[str, Any]:
    template: dict[str, Any] = json.loads(TEMPLATE.read_text())
    template["job_configuration"]["env"] = {"FROM_DISPATCHER": f"{{{{ ${name} }}}}"}
    return template


def test_a_template_reading_an_env_name_the_operator_did_not_allow_is_refused_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv(TEMPLATE_ENV, "DEPLOY_REGION")
    store = SQLiteStore(str(tmp_path / "s.db"))
    template = env_template("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(TemplateError, match=r"\{\{ \$AWS_SECRET_ACCESS_KEY \}\}.*secret of the dispatcher"):
        pools.create_pool(store, "p", base_job_template=template)
    pools.create_pool(store, "p")
    with pytest.raises(TemplateError, match=r"\{\{ \$AWS_SECRET_ACCESS_KEY \}\}"):
        pools.update_pool(store, "p", base_job_template=template)
    (tmp_path / "t.json").write_text(json.dumps(template))
    (tmp_path / "pools.yaml").write_text("work_pools:\n  - {name: p, base_job_template_file: t.json}\n")
    with pytest.raises(TemplateError, match=r"\{\{ \$AWS_SECRET_ACCESS_KEY \}\}"):
        apply(store, tmp_path / "pools.yaml", dry_run=False)

    # Listing a secret does not make it readable; another name is readable once listed, and not before.
    monkeypatch.setenv(TEMPLATE_ENV, "AWS_SECRET_ACCESS_KEY")
    with pytest.raises(TemplateError, match="secret of the dispatcher"):
        pools.update_pool(store, "p", base_job_template=template)
    monkeypatch.setenv(TEMPLATE_ENV, "")
    with pytest.raises(TemplateError) as refused:
        pools.update_pool(store, "p", base_job_template=env_template("DEPLOY_REGION"))
    assert str(refused.value) == (
        "job_configuration: {{ $DEPLOY_REGION }} reads the dispatcher's environment variable DEPLOY_REGION, which "
        "PUSHPOOL_TEMPLATE_ENV does not list; add DEPLOY_REGION to PUSHPOOL_TEMPLATE_ENV (comma-separated) "
        "wherever pushpool runs, or remove the placeholder."
    )
    monkeypatch.setenv(TEMPLATE_ENV, " OTHER , DEPLOY_REGION ")
    pools.update_pool(store, "p", base_job_template=env_template("DEPLOY_REGION"))
    store.close()


def test_a_stored_template_reading_a_secret_is_refused_when_rendered(world: World) -> None:
    """Defence in depth: a template stored before the rule (or written around it) never renders a secret."""
    pool = world.store.get_pool("p")
    assert pool is not None
    world.store.update_pool(pool.model_copy(update={"base_job_template": env_template("AWS_SECRET_ACCESS_KEY")}))
    deployments.create_deployment(world.store, "d", pool="p")
    run = deployments.run_deployment(
        world.store, "d", job_variables={"command": "true"}, scheduled_time=utcnow() - timedelta(seconds=1)
    )
    summary = world.dispatcher.run_pass(pool="p")
    assert run.id in summary.crashed and not summary.submitted
    crashed = world.store.get_run(run.id)
    assert crashed is not None and crashed.infrastructure_id is None
    assert "{{ $AWS_SECRET_ACCESS_KEY }}" in (crashed.state_history[-1].message or "")
    assert "aws-secret-value" not in crashed.model_dump_json()


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40))
def test_property_a_quoted_value_reaches_the_shell_as_exactly_itself(value: str) -> None:
    """Whatever the value, the shell that runs the script prints it back unchanged: it was one plain word."""
    job = render({"command": "sh -c 'printf %s {{ x }}'"}, {"x": value}, {})
    done = subprocess.run(job["command"], capture_output=True, timeout=10, check=True)
    assert done.stdout == value.encode("utf-8", "surrogateescape")


# 6. apply never echoes a file a document points at ---------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("shadow", "root:$6$saltsalt$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"),
        ("creds.yaml", "AWS_SECRET_ACCESS_KEY: SECRETVALUE\nDB_PASSWORD: SECRETPASSWORD\n"),
        ("alias.yaml", "token: *SECRETALIAS\n"),
        ("twice.json", '{"SECRETKEY": 1, "SECRETKEY": 2}'),
        ("list.yaml", "- SECRETITEM\n"),
        ("bad.json", '{"SECRETKEY": SECRETVALUE}'),
    ],
)
def test_apply_names_a_pointed_at_file_and_its_problem_never_its_contents(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    document = tmp_path / "pools.yaml"
    document.write_text(f"work_pools:\n  - {{name: p, base_job_template_file: {name}}}\n")
    store = SQLiteStore(str(tmp_path / "s.db"))
    with pytest.raises(InvalidInput) as refused:
        apply(store, document, dry_run=True)
    message = str(refused.value)
    assert "work_pools[0].base_job_template_file: " in message and str(tmp_path / name) in message
    shown = message.replace(str(tmp_path), "<dir>")
    assert "SECRET" not in shown and "root" not in shown and "daemon" not in shown, message
    assert store.get_pool("p") is None
    store.close()


# 7. what a job writes reaches the terminal escaped ---------------------------------------------------------
HOSTILE = (
    "done\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ \x9b31m"
    " \u202egnp.exe\u202c [red]x[/red] [link=http://evil.example/]y[/link] :smile:\nFAKE LINE\r"
)
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\nFAKE LINE")


def _signed_callback(store: SQLiteStore, run: FlowRun, payload: dict[str, Any]) -> None:
    from dispatcher import signing
    from dispatcher.callbacks import apply_callback

    body = json.dumps(payload).encode()
    token = run_token(master_secret(store), run.deployment_id, run.id)
    apply_callback(store, run.id, body, signing.sign(token, body, int(time.time())))


def test_a_job_s_words_and_output_reach_the_terminal_escaped_and_json_stays_json(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from dispatcher.cli import app

    monkeypatch.setenv("PUSHPOOL_PROCESS_DIR", str(world.provider.state_dir))
    printer = f"import sys; sys.stdout.write({HOSTILE!r})"
    run = world.run({"command": [sys.executable, "-c", printer]})
    _signed_callback(world.store, run, {"state": "FAILED", "exit_code": 3, "message": HOSTILE})
    url = f"sqlite:///{world.tmp_path / 's.db'}"
    runner = CliRunner()
    outputs = {}
    for args in (["flow-run", "inspect", run.id], ["flow-run", "ls"], ["flow-run", "logs", run.id]):
        result = runner.invoke(app, ["--store", url, *args])
        assert result.exit_code == 0, result.output
        outputs[args[1]] = result.stdout
    for name, text in outputs.items():
        for raw in RAW:
            # A job's output keeps its own lines; a message is one line whatever it holds.
            if not (name == "logs" and raw == "\nFAKE LINE"):
                assert raw not in text, (name, raw)
    assert "\\x0aFAKE LINE" in outputs["logs"]
    assert "\\x1b[2J" in outputs["inspect"] and "\\u202e" in outputs["inspect"]
    assert "[red]x[/red]" in outputs["inspect"].replace("\n", "")  # markup printed as written, not obeyed
    assert ":smile:" in outputs["inspect"].replace("\n", "")
    assert outputs["logs"].count("\\x1b[2J") == 2  # the callback's message and the job's own output
    shown = runner.invoke(app, ["--store", url, "flow-run", "inspect", run.id, "-o", "json"]).stdout
    for raw in RAW:
        assert raw not in shown
    assert json.loads(shown)["state_history"][-1]["message"] == HOSTILE


def test_safe_text_escapes_every_control_and_invisible_format_character() -> None:
    from dispatcher.terminal import escape_json_text, safe_text

    assert safe_text("a\x1b[1mb\x00\x7f\x85\u200b\u2066\ufeff\U000e0041") == (
        "a\\x1b[1mb\\x00\\x7f\\x85\\u200b\\u2066\\ufeff\\U000e0041"
    )
    assert safe_text("tab\there\nnext") == "tab\\x09here\\x0anext"
    assert safe_text("tab\there\nnext", keep_lines=True) == "tab\there\nnext"
    assert safe_text("émoji 🚀 ünïcode 中文") == "émoji 🚀 ünïcode 中文"
    text = json.dumps({"m": "\u202e\x9b\U000e0041 ok"}, ensure_ascii=False)
    assert json.loads(escape_json_text(text)) == {"m": "\u202e\x9b\U000e0041 ok"}
    assert escape_json_text(text).isascii()
