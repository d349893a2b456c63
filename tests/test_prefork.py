"""``serve --processes N``: receivers and executors, the wake-up pipe, the shared write queue."""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests

from connector import flows, prefork, store
from connector.runtime import Runtime
from connector.store import Run

from .conftest import wait_for


def test_processes_split_into_receivers_and_executors():
    assert prefork.split(1) == ["all"]
    assert prefork.split(2) == ["receiver", "scheduler"]
    assert prefork.split(4) == ["receiver"] * 2 + ["scheduler"] * 2
    assert prefork.split(3, receivers=5) == ["receiver"] * 2 + ["scheduler"]  # one executes
    assert prefork.split(2, receivers=0) == ["all", "all"]
    assert prefork.split(3, receivers=0) == ["all"] * 3


def test_a_bad_receivers_count_is_one_error_line(monkeypatch, capsys):
    from connector.cli import main

    monkeypatch.setenv(prefork.RECEIVERS_VAR, "half")
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--processes", "2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--receivers" in err and "half" in err
    assert "Traceback" not in err


def test_a_receiver_records_queues_and_tells_the_executors(host):
    told = []
    runtime = Runtime(host, role="receiver", on_queued=lambda: told.append(1))
    assert runtime.executor is None and runtime.scheduler is None
    flow = flows.save(host, {"name": "catch", "trigger": {"key": "webhook.catch"},
                             "steps": [{"action": "formatter.lookup",
                                        "inputs": {"key": "a", "table": {"a": "b"}}}]})
    flows.enable(host, flow)
    answer = runtime.app.test_client().post(f"/hooks/{flow.webhook_token}", json={"x": 1})
    assert answer.status_code == 200 and told == [1]
    assert Run.get().status == Run.QUEUED  # executing is another process's job
    runtime.stop()


def test_the_pipe_wakes_an_executor_for_what_receivers_queued():
    read, write = os.pipe()
    os.set_blocking(write, False)
    notify, woken = prefork._notifier(write), []
    notify()
    notify()
    os.close(write)  # the listener returns at end of file
    prefork._listen(read, lambda: woken.append(1))
    os.close(read)
    assert woken  # one wake-up per batch of bytes read, at least one


def test_a_full_pipe_does_not_block_a_receiver():
    read, write = os.pipe()
    os.set_blocking(write, False)
    notify = prefork._notifier(write)
    for _ in range(70_000):  # more bytes than a pipe holds
        notify()
    os.close(read)
    os.close(write)


def _try_lock(path: str) -> int:
    """Fork a process that tries the write queue's lock file; return 1 if it got it."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            code = 1
        except BlockingIOError:
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_writers_of_every_process_queue_on_one_lock_file(host):
    path = f"{store.db.obj.database}-writelock"
    with store.write_tx():
        with store.write_tx():  # nested: the outer one keeps the lock
            pass
        assert os.path.exists(path) and _try_lock(path) == 0  # another process must wait
    assert _try_lock(path) == 1  # released with the commit


@pytest.mark.parametrize("receivers", ["0", "1"])
def test_serve_with_two_processes_answers_and_executes(host, settings, receivers):
    flow = flows.save(host, {"name": "catch", "trigger": {"key": "webhook.catch"},
                             "steps": [{"action": "formatter.lookup",
                                        "inputs": {"key": "a", "table": {"a": "b"}}}]})
    flows.enable(host, flow)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CONNECTOR_DATABASE_URL": settings.database_url,
           "CONNECTOR_SECRET_KEY": settings.secret_key, prefork.RECEIVERS_VAR: receivers}
    serve = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "connector"),
                              "serve", "--port", str(port),
                              "--processes", "2"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def answered():
            try:
                return requests.post(f"http://127.0.0.1:{port}/hooks/{flow.webhook_token}",
                                     json={"x": 1}, timeout=5).status_code == 200
            except requests.ConnectionError:
                return serve.poll() is not None  # stop waiting if it died
        assert wait_for(answered, timeout=60) and serve.poll() is None
        assert wait_for(lambda: Run.get().status == Run.SUCCEEDED, timeout=60)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(60)


@pytest.mark.parametrize("extra", [[], ["--processes", "2"]])
def test_a_taken_port_is_one_error_line(extra, capsys, tmp_path, monkeypatch):
    from connector.cli import main

    monkeypatch.setenv("CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stop:
            main(["serve", "--port", str(port), *extra])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err == f"error: serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
