"""Supervised embedded servers: SIGKILLed, they are reaped and come back on the same port with their data."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pymongo
import pytest
from confluent_kafka import Consumer, Producer

from functions.shared.kafka import ensure_topics
from local.servers import EmbeddedKafka, EmbeddedMongo, EmbeddedPostgres, EmbeddedSmtp, ServerProcess
from tests.conftest import eventually


def kill_and_wait_for_restart(server: ServerProcess) -> int:
    """SIGKILLs the server's process; returns the pid of the one that replaced it."""
    old = server.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    new = eventually(lambda: server.pid not in (None, old) and server.lifecycle.state.value == "Running" and server.pid)
    status = server.status()
    assert status["restarts"] >= 1
    assert status["lastExit"]["signal"] == "SIGKILL"
    assert not os.path.exists(f"/proc/{old}"), "the dead process was not reaped"
    return int(new)


@pytest.mark.timeout(120)
def test_a_killed_postgres_is_reaped_and_restarted_with_its_data(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path).supervise() as postgres:
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (1), (2), (3)")
            # A busy backend outlives its postmaster for a moment, holding the shared memory.
            busy = psycopg.connect(postgres.url(), autocommit=True)
        port = postgres.port
        sleeper = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import psycopg; psycopg.connect({postgres.url()!r}).execute('SELECT pg_sleep(30)')",
            ]
        )
        try:
            eventually(lambda: _active_queries(postgres.url()) >= 1)
            kill_and_wait_for_restart(postgres)
        finally:
            sleeper.kill()
            sleeper.wait()
            busy.close()
        assert postgres.port == port
        with psycopg.connect(postgres.url()) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (3,)


def _active_queries(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(60)
def test_a_postmaster_pid_naming_a_live_postgres_is_never_removed(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path) as first:
        second = EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path)
        lock_file = tmp_path / "pg" / "postmaster.pid"
        held = lock_file.read_text()
        with pytest.raises(RuntimeError, match=r"PostgreSQL \(pid \d+\) is running on"):
            second._check_lock_file(wait=0.3)
        assert lock_file.read_text() == held
        with psycopg.connect(first.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.timeout(60)
def test_a_postmaster_pid_naming_a_reused_pid_is_stale(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path)
    with postgres:
        pass
    # The pid now belongs to an unrelated program: the lock is stale, though PostgreSQL would take it for live.
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        lock_file = tmp_path / "pg" / "postmaster.pid"
        lock_file.write_text(f"{unrelated.pid}\n{tmp_path / 'pg'}\n")
        with postgres:
            with psycopg.connect(postgres.url()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert lock_file.read_text().split()[0] == str(postgres.pid)
    finally:
        unrelated.kill()
        unrelated.wait()


@pytest.mark.timeout(120)
def test_a_killed_mongo_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    with EmbeddedMongo(tmp_path / "mongo", log_dir=tmp_path).supervise() as mongo:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=20000)
        try:
            for n in range(200):
                client.shop.kept.insert_one({"n": n})
            kill_and_wait_for_restart(mongo)
            assert client.shop.kept.count_documents({}) == 200
        finally:
            client.close()


@pytest.mark.timeout(120)
def test_a_killed_kafka_comes_back_and_tells_its_listeners(tmp_path: Path) -> None:
    restarts: list[float] = []
    with EmbeddedKafka(log_dir=tmp_path).supervise() as kafka:
        kafka.on_restart.append(lambda: restarts.append(time.monotonic()))
        kill_and_wait_for_restart(kafka)
        assert len(restarts) == 1
        ensure_topics(kafka.bootstrap_servers, ["after.restart"], partitions=1)
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
        producer.produce("after.restart", value=b"hello")
        assert producer.flush(15) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": "after-restart",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "log_level": 0,
            }
        )
        consumer.subscribe(["after.restart"])
        try:
            message = eventually(lambda: consumer.poll(0.5), timeout=30)
            assert message.value() == b"hello"
        finally:
            consumer.close()


@pytest.mark.timeout(60)
def test_a_killed_smtp_server_comes_back_and_keeps_its_refusals(tmp_path: Path) -> None:
    with EmbeddedSmtp(tmp_path / "mail", log_dir=tmp_path).supervise() as smtp:
        smtp.fail_next(1)
        port = smtp.port
        kill_and_wait_for_restart(smtp)
        assert smtp.port == port
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "shop@example.test", "a@example.test", "after"
        message.set_content("hi\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError):
                client.send_message(message)
            client.send_message(message)
        assert [m["Subject"] for m in smtp.messages()] == ["after"]


@pytest.mark.timeout(60)
def test_a_server_that_keeps_dying_backs_off(tmp_path: Path) -> None:
    smtp = EmbeddedSmtp(tmp_path / "mail", log_dir=tmp_path).supervise()
    smtp.lifecycle.backoff = type(smtp.lifecycle.backoff)(first=3.0, cap=3.0, reset_after=60)
    with smtp:
        kill_and_wait_for_restart(smtp)
        os.kill(smtp.pid or 0, signal.SIGKILL)
        status = eventually(lambda: (s := smtp.status())["state"] == "CrashLoopBackOff" and s)
        assert status["nextRestartInSeconds"] > 1
        assert status["pid"] is None
        eventually(lambda: smtp.lifecycle.state.value == "Running", timeout=15)
        assert smtp.status()["restarts"] == 2


@pytest.mark.timeout(60)
def test_a_stopped_server_is_not_restarted(tmp_path: Path) -> None:
    smtp = EmbeddedSmtp(tmp_path / "mail", log_dir=tmp_path).supervise()
    smtp.start()
    smtp.stop()
    # The watcher has seen the exit and decided (a restart would have begun before it ends).
    eventually(lambda: not smtp.watching)
    assert smtp.pid is None and smtp.status()["state"] == "Stopped"
