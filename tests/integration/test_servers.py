"""Integration tests of the embedded servers, each driven through its real client."""

import smtplib
import socket
import subprocess
import sys
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from local.servers import (
    EmbeddedKafka,
    EmbeddedMongo,
    EmbeddedPostgres,
    EmbeddedSmtp,
    free_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def refuses_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def mongo_client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(uri)


def test_free_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert listener.getsockname() == ("127.0.0.1", port)


@pytest.mark.timeout(120)
def test_postgres_keeps_data_and_port_across_restart(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path, durable=False)
    with postgres:
        port = postgres.port
        assert postgres.url() == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(postgres.url()) as conn:
            conn.execute("CREATE TABLE product (sku text PRIMARY KEY, name text NOT NULL)")
            conn.execute("INSERT INTO product VALUES ('SKU-1', 'Café crème')")
    assert refuses_connections(port)

    with postgres:
        assert postgres.port == port
        with psycopg.connect(postgres.url()) as conn:
            rows = conn.execute("SELECT sku, upper(name) FROM product").fetchall()
    # upper() of non-ASCII letters shows a UTF-8 cluster with a Unicode-aware locale.
    assert rows == [("SKU-1", "CAFÉ CRÈME")]


@pytest.mark.timeout(120)
def test_postgres_ensure_database_creates_it_once(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path) as postgres:
        url = postgres.ensure_database("orders")
        assert url == postgres.url("orders")
        assert postgres.ensure_database("orders") == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("orders",)
    assert (postgres.bin_dir / "pgbench").is_file()
    assert (postgres.bin_dir / "psql").is_file()


@pytest.mark.timeout(120)
def test_postgres_start_failure_quotes_the_server_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        postgres = EmbeddedPostgres(tmp_path / "pg", port=taken, log_dir=tmp_path, durable=False)
        with pytest.raises(RuntimeError, match="Address already in use"):
            postgres.start()
    postgres.stop()


@pytest.mark.timeout(120)
def test_mongo_insert_find_and_transactions(tmp_path: Path) -> None:
    with EmbeddedMongo(None, log_dir=tmp_path) as mongo:
        assert mongo.uri == f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true"
        client = mongo_client(mongo.uri)
        try:
            carts = client.shop.carts
            carts.insert_one({"_id": "cart-1", "items": 2})
            assert carts.find_one({"_id": "cart-1"}) == {"_id": "cart-1", "items": 2}

            with client.start_session() as session, session.start_transaction():
                carts.insert_one({"_id": "cart-2", "items": 1}, session=session)
                carts.update_one({"_id": "cart-1"}, {"$inc": {"items": 1}}, session=session)
            with client.start_session() as session:
                session.start_transaction()
                carts.insert_one({"_id": "cart-3", "items": 5}, session=session)
                session.abort_transaction()

            assert list(carts.find().sort("_id")) == [
                {"_id": "cart-1", "items": 3},
                {"_id": "cart-2", "items": 1},
            ]
        finally:
            # Before the server stops: closing against a dead server waits 30 s.
            client.close()


@pytest.mark.timeout(120)
def test_mongo_keeps_data_on_disk_across_restart(tmp_path: Path) -> None:
    mongo = EmbeddedMongo(tmp_path / "mongo", log_dir=tmp_path)
    with mongo:
        port = mongo.port
        with mongo_client(mongo.uri) as client:
            client.shop.products.insert_one({"_id": "SKU-1", "price": 1299})
    assert refuses_connections(port)

    with mongo:
        assert mongo.port == port
        with mongo_client(mongo.uri) as client:
            found = client.shop.products.find_one({"_id": "SKU-1"})
    assert found == {"_id": "SKU-1", "price": 1299}


def poll_one(consumer: Consumer, timeout: float) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None:
            assert message.error() is None, message.error()
            return message
    raise AssertionError(f"no message within {timeout} s")


@pytest.mark.timeout(180)
def test_kafka_produce_and_consume(tmp_path: Path) -> None:
    with EmbeddedKafka(log_dir=tmp_path) as kafka:
        assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}"
        config: dict[str, str | int | float | bool] = {"bootstrap.servers": kafka.bootstrap_servers}
        admin = AdminClient(config)
        created = admin.create_topics([NewTopic("orders", num_partitions=1)])
        created["orders"].result(timeout=30)

        producer = Producer(config)
        producer.produce("orders", key=b"order-1", value=b'{"total": 1299}')
        assert producer.flush(30) == 0

        consumer = Consumer(
            config
            | {
                "group.id": "test-servers",
                "session.timeout.ms": 6000,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe(["orders"])
            message = poll_one(consumer, timeout=90)
        finally:
            consumer.close()
    assert (message.topic(), message.key(), message.value()) == (
        "orders",
        b"order-1",
        b'{"total": 1299}',
    )


@pytest.mark.timeout(120)
def test_kafka_restart_comes_back_on_the_same_port(tmp_path: Path) -> None:
    kafka = EmbeddedKafka(log_dir=tmp_path)
    with kafka:
        port = kafka.port
    assert refuses_connections(port)

    with kafka:
        assert kafka.port == port
        metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
    # The broker advertises the same address, so clients keep using it after a restart.
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", port)]


def order_email(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "shop@example.test"
    message["To"] = "customer@example.test"
    message["Subject"] = subject
    message.set_content("Thanks for your order.\n")
    return message


@pytest.mark.timeout(60)
def test_smtp_captures_every_message_oldest_first(tmp_path: Path) -> None:
    mail_dir = tmp_path / "mail"
    with EmbeddedSmtp(mail_dir) as smtp:
        assert smtp.url == f"smtp://127.0.0.1:{smtp.port}"
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
            client.send_message(order_email("Order 1 confirmed"))
            client.send_message(
                order_email("Order 1 shipped"),
                to_addrs=["customer@example.test", "audit@example.test"],
            )
        messages = smtp.messages()

    assert [m["Subject"] for m in messages] == ["Order 1 confirmed", "Order 1 shipped"]
    assert messages[0]["To"] == "customer@example.test"
    body = messages[0].get_body()
    assert body is not None
    assert isinstance(body, EmailMessage)
    assert body.get_content() == "Thanks for your order.\n"
    # Recipients only in the envelope (Bcc) are kept too.
    assert messages[1]["X-RcptTo"] == "customer@example.test, audit@example.test"
    assert sorted(p.suffix for p in mail_dir.iterdir()) == [".eml", ".eml"]


@pytest.mark.timeout(60)
def test_smtp_fail_next_refuses_then_accepts(tmp_path: Path) -> None:
    with EmbeddedSmtp(tmp_path / "mail") as smtp:
        smtp.fail_next(2)
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
            for attempt in (1, 2):
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.send_message(order_email(f"attempt {attempt}"))
                assert refused.value.smtp_code == 451
            client.send_message(order_email("attempt 3"))

        smtp.fail_next(1, code=554)
        with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPResponseException) as rejected:
                client.send_message(order_email("attempt 4"))
            assert rejected.value.smtp_code == 554
        assert [m["Subject"] for m in smtp.messages()] == ["attempt 3"]


@pytest.mark.timeout(60)
def test_smtp_restart_keeps_port_and_mail(tmp_path: Path) -> None:
    smtp = EmbeddedSmtp(tmp_path / "mail")
    with smtp:
        port = smtp.port
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(order_email("before restart"))
    assert refuses_connections(port)

    with smtp:
        assert smtp.port == port
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(order_email("after restart"))
        subjects = [m["Subject"] for m in smtp.messages()]
    assert subjects == ["before restart", "after restart"]


@pytest.mark.timeout(180)
def test_start_and_stop_print_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path, durable=False):
        pass
    with EmbeddedMongo(None, log_dir=tmp_path):
        pass
    with EmbeddedKafka(log_dir=tmp_path):
        pass
    with EmbeddedSmtp(tmp_path / "mail"):
        pass
    assert capfd.readouterr() == ("", "")


@pytest.mark.timeout(120)
def test_servers_left_running_are_stopped_at_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from local.servers import EmbeddedKafka, EmbeddedPostgres
        logs = Path({str(tmp_path)!r})
        postgres = EmbeddedPostgres(logs / "pg", log_dir=logs, durable=False)
        kafka = EmbeddedKafka(log_dir=logs)
        postgres.start()
        kafka.start()
        print(postgres.port, kafka.port)
        """
    )
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert (finished.returncode, finished.stderr) == (0, "")
    ports = [int(port) for port in finished.stdout.split()]
    assert len(ports) == 2
    assert all(refuses_connections(port) for port in ports)
