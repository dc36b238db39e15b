"""Chaos on the whole local shop: customers order through the gateway while a server is killed or refuses.

One `run_fault` is one phase: a fresh product with plenty of stock, four customers ordering in a
loop (one Idempotency-Key per order, retried with the same key after a 409, 429, 5xx or lost
connection, as a careful client does), an admin editing the product, then the fault, then load
until the shop has recovered, then settling (every key answered, every mail arrived). The
report says what customers saw and what the stores hold; the tests assert on it and
`./taskw chaos` prints it.

Recovery is measured by what the fault interrupts: orders for PostgreSQL, the admin's product
edits for MongoDB, confirmation mails for Kafka and SMTP (orders go on being accepted while
those are down, thanks to the outboxes). It is the time from the fault to the end of the last
failed answer (orders, edits), or to the first mail of an order placed after the fault (mail).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import psycopg
import requests

from local.stack import Stack

CUSTOMERS = ("jane", "jane", "john", "john")  # two signed-in users, each ordering from two tabs
ADMIN = "admin"
STOCK = 5000
PACE_SECONDS = 0.5  # between one customer's orders: under the gateway's 5 orders/s per user
RETRY_CAP_SECONDS = 0.5  # a retried key waits Retry-After, but at most this long
WARMUP_SECONDS = 3.0
CALM_SECONDS = 3.0  # recovered means: this long with no failed answer (or, for mail, a mail through)
MAX_FAULT_SECONDS = 90.0  # give up waiting for recovery after this long
SETTLE_SECONDS = 150.0
OUTAGE_STATUSES = frozenset({0, 409, 500, 502, 503, 504})  # 0: no answer at all


@dataclass(frozen=True)
class Answer:
    sent: float
    done: float
    status: int
    kind: str  # "order" | "edit"
    key: str = ""
    user: str = ""
    order_number: str | None = None


@dataclass(frozen=True)
class Fault:
    name: str
    # What the fault interrupts: "order", "edit" or "mail".
    signal: str
    inject: Callable[[Stack], None]
    # Called when load stops (a refusal window that must end); None: nothing to undo.
    heal: Callable[[Stack], None] | None = None
    # For a refusal, recovery counts from its end, not from its start.
    outage_seconds: float = 0.0


def sigkill(server: str) -> Callable[[Stack], None]:
    def inject(stack: Stack) -> None:
        pid = getattr(stack, server).pid
        assert pid is not None, f"{server} is not running"
        os.kill(pid, signal.SIGKILL)

    return inject


def refuse_mail(seconds: float) -> Fault:
    def inject(stack: Stack) -> None:
        assert stack.smtp is not None
        stack.smtp.refuse_for(seconds)

    def heal(stack: Stack) -> None:
        assert stack.smtp is not None
        stack.smtp.refuse_for(0)

    return Fault(f"SMTP refusing for {seconds:.0f} s", "mail", inject, heal, outage_seconds=seconds)


FAULTS = {
    "postgres": Fault("PostgreSQL killed", "order", sigkill("postgres")),
    "mongodb": Fault("MongoDB killed", "edit", sigkill("mongo")),
    "kafka": Fault("Kafka killed", "mail", sigkill("kafka")),
    "smtp": Fault("SMTP server killed", "mail", sigkill("smtp")),
    "smtp-refusal": refuse_mail(60),
}


@dataclass
class FaultReport:
    fault: str
    recovery_seconds: float | None = None
    outage_answers: Counter[int] = field(default_factory=Counter)
    answers: Counter[int] = field(default_factory=Counter)
    placed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_mails: int = 0
    keys_with_two_orders: list[str] = field(default_factory=list)
    unanswered_keys: int = 0
    orders_without_answer: list[str] = field(default_factory=list)
    history_mismatches: dict[str, Any] = field(default_factory=dict)
    stock_initial: int = STOCK
    stock_available: int = 0
    stock_held_or_committed: int = 0
    stock_overshoots: list[tuple[int, int]] = field(default_factory=list)  # (available, allowed) seen
    edits_lost: int = 0

    def problems(self) -> list[str]:
        """Every promise the run broke, in words (empty: none)."""
        found = []
        if self.answers[500]:
            found.append(f"{self.answers[500]} answers were 500")
        if self.recovery_seconds is None:
            found.append("the shop did not recover")
        if self.lost:
            found.append(f"orders lost: {self.lost}")
        if self.duplicate_mails:
            found.append(f"{self.duplicate_mails} duplicate mails")
        if self.keys_with_two_orders:
            found.append(f"keys with two orders: {self.keys_with_two_orders}")
        if self.unanswered_keys:
            found.append(f"{self.unanswered_keys} keys never got a final answer")
        if self.orders_without_answer:
            found.append(f"orders in the database no customer got a 201 for: {self.orders_without_answer}")
        if self.history_mismatches:
            found.append(f"order histories differ from the 201s: {self.history_mismatches}")
        if self.stock_overshoots:
            found.append(f"stock above initial - placed: {self.stock_overshoots[:5]}")
        if self.stock_initial - self.stock_available != self.stock_held_or_committed:
            found.append(
                f"stock not conserved: {self.stock_initial} - {self.stock_available} available"
                f" != {self.stock_held_or_committed} held or committed"
            )
        if self.stock_held_or_committed < self.placed:
            found.append(f"fewer units held or committed ({self.stock_held_or_committed}) than placed ({self.placed})")
        if self.edits_lost:
            found.append(f"{self.edits_lost} acknowledged product edits lost")
        return found


class Mailbox:
    """The SMTP server's mail folder, read incrementally: subject -> arrival times."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self.arrivals: dict[str, list[float]] = {}
        self._parser = BytesHeaderParser()

    def refresh(self) -> None:
        for path in self.folder.glob("*.eml"):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            with path.open("rb") as handle:
                subject = str(self._parser.parse(handle)["Subject"] or "")
            self.arrivals.setdefault(subject, []).append(path.stat().st_mtime)

    def for_order(self, number: str) -> list[float]:
        return [t for subject, times in self.arrivals.items() if number in subject for t in times]


class Phase:
    """One fault under load: runs the customers and the admin, injects the fault, judges the outcome."""

    def __init__(self, stack: Stack, fault: Fault) -> None:
        self.stack = stack
        self.fault = fault
        self.url = stack.url
        self.sku = f"chaos_{uuid.uuid4().hex[:10]}"
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.unanswered: set[str] = set()
        self.edits: list[str] = []  # descriptions the admin was told were saved (200), in order
        self.overshoots: list[tuple[int, int]] = []
        assert stack.smtp is not None
        self.mailbox = Mailbox(stack.smtp.mail_dir)

    # --- the people -------------------------------------------------------------------------

    def token(self, user: str) -> str:
        assert self.stack.issuer is not None
        return str(self.stack.issuer.token_for(user)["access_token"])

    def setup(self) -> None:
        """The phase's product and its stock, made as an admin would (trying again after a 503)."""
        admin = {"Authorization": f"Bearer {self.token(ADMIN)}"}
        body = {"sku": self.sku, "name": f"Chaos {self.sku}", "category": "tests", "price": 10}
        created = _until_answered(lambda: requests.post(f"{self.url}/api/products", json=body, headers=admin))
        assert created.status_code == 201, created.text
        stock = {"quantity": STOCK}
        stocked = _until_answered(
            lambda: requests.put(f"{self.url}/api/inventory/{self.sku}", json=stock, headers=admin)
        )
        assert stocked.status_code in (200, 201), stocked.text

    def customer(self, user: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token(user)}"
        while not self.stopping.is_set():
            key = str(uuid.uuid4())
            with self.lock:
                self.unanswered.add(key)
            first_try = time.monotonic()
            while True:  # the same key until a final answer, even after the load stops
                sent = time.monotonic()
                status, number, wait = self._order(session, key)
                self._note(Answer(sent, time.monotonic(), status, "order", key, user, number))
                if status not in OUTAGE_STATUSES and status != 429:
                    break
                if time.monotonic() - first_try > SETTLE_SECONDS:
                    return  # counted as an unanswered key
                time.sleep(min(wait, RETRY_CAP_SECONDS))
            with self.lock:
                self.unanswered.discard(key)
            self.stopping.wait(PACE_SECONDS)

    def _order(self, session: requests.Session, key: str) -> tuple[int, str | None, float]:
        body = {"items": [{"skuCode": self.sku, "quantity": 1}]}
        try:
            answer = session.post(f"{self.url}/api/orders", json=body, headers={"Idempotency-Key": key}, timeout=30)
        except requests.RequestException:
            return 0, None, 1.0
        number = answer.json().get("orderNumber") if answer.status_code == 201 else None
        return answer.status_code, number, float(answer.headers.get("Retry-After", "1") or 1)

    def admin(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token(ADMIN)}"
        edit = 0
        while not self.stopping.is_set():
            edit += 1
            description = f"edit {edit}"
            sent = time.monotonic()
            try:
                answer = session.patch(
                    f"{self.url}/api/products/{self.sku}", json={"description": description}, timeout=30
                )
                status = answer.status_code
            except requests.RequestException:
                status = 0
            self._note(Answer(sent, time.monotonic(), status, "edit"))
            if status == 200:
                with self.lock:
                    self.edits.append(description)
            self.stopping.wait(PACE_SECONDS)

    def _note(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> FaultReport:
        self.setup()
        threads = [threading.Thread(target=self.customer, args=(user,), daemon=True) for user in CUSTOMERS]
        threads.append(threading.Thread(target=self.admin, daemon=True))
        for thread in threads:
            thread.start()
        self._watch_stock(WARMUP_SECONDS)
        injected = time.monotonic()
        self.fault.inject(self.stack)
        recovered_from = injected + self.fault.outage_seconds
        try:
            while time.monotonic() - injected < MAX_FAULT_SECONDS + self.fault.outage_seconds:
                self._watch_stock(0.5)
                if time.monotonic() > recovered_from and self._recovered_at(injected, recovered_from, calm=True):
                    break
        finally:
            if self.fault.heal is not None:
                self.fault.heal(self.stack)
            self.stopping.set()
        for thread in threads:
            thread.join(SETTLE_SECONDS)
        return self._judge(injected, recovered_from)

    def _recovered_at(self, injected: float, recovered_from: float, *, calm: bool = False) -> float | None:
        """When the interrupted work went back to normal (monotonic time), or None if not yet."""
        now = time.monotonic()
        if self.fault.signal == "mail":
            self.mailbox.refresh()
            with self.lock:
                after = [a for a in self.answers if a.order_number and a.sent > recovered_from]
            arrivals = [t for a in after for t in self.mailbox.for_order(a.order_number or "")]
            if not arrivals:
                return None
            # Mail file times are wall-clock: turn the first into monotonic time.
            first = min(arrivals) - time.time() + now
            return max(first, recovered_from)
        with self.lock:
            relevant = [a for a in self.answers if a.kind == self.fault.signal and a.sent >= injected]
        failed = [a.done for a in relevant if a.status in OUTAGE_STATUSES]
        last_failure = max(failed, default=injected)
        succeeded = [a for a in relevant if a.status in (200, 201) and a.sent >= last_failure]
        if not succeeded or (calm and now - last_failure < CALM_SECONDS):
            return None
        return last_failure

    def _watch_stock(self, seconds: float) -> None:
        """Samples stock while waiting: it must never be above initial - orders answered 201 so far."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                placed = len({a.order_number for a in self.answers if a.order_number})
            try:
                available = self._available()
            except psycopg.Error:
                available = None  # PostgreSQL is down: nothing to sample
            if available is not None and available > STOCK - placed:
                self.overshoots.append((available, STOCK - placed))
            time.sleep(0.25)

    # --- what the stores and the mailbox say ---------------------------------------------------

    def sql(self, database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.stack.database_urls[database], autocommit=True, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def _available(self) -> int:
        return int(self.sql("inventory", "SELECT available FROM stock WHERE sku = %s", self.sku)[0][0])

    def _judge(self, injected: float, recovered_from: float) -> FaultReport:
        report = FaultReport(self.fault.name)
        with self.lock:
            answers = list(self.answers)
            report.unanswered_keys = len(self.unanswered)
        recovered = self._recovered_at(injected, recovered_from)
        if recovered is not None:
            report.recovery_seconds = round(recovered - recovered_from, 1)
        report.answers = Counter(a.status for a in answers)
        until = recovered if recovered is not None else time.monotonic()
        report.outage_answers = Counter(a.status for a in answers if injected <= a.done <= until)
        by_key: dict[str, set[str]] = {}
        by_user: dict[str, set[str]] = {}
        for answer in answers:
            if answer.order_number:
                by_key.setdefault(answer.key, set()).add(answer.order_number)
                by_user.setdefault(answer.user, set()).add(answer.order_number)
        placed = set().union(*by_key.values()) if by_key else set()
        report.placed = len(placed)
        report.keys_with_two_orders = [key for key, numbers in by_key.items() if len(numbers) > 1]
        in_store = {
            row[0] for row in self.sql("orders", "SELECT order_number FROM order_lines WHERE sku = %s", self.sku)
        }
        report.orders_without_answer = sorted(in_store - placed)
        report.history_mismatches = self._histories(by_user)
        # Every placed order's confirmation mail, once; the rest settle first.
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            self.mailbox.refresh()
            if all(self.mailbox.for_order(n) for n in placed):
                break
            time.sleep(1)
        time.sleep(2)  # a duplicate would come right behind the first copy
        self.mailbox.refresh()
        mails = {n: len(self.mailbox.for_order(n)) for n in placed}
        report.lost = sorted((placed - in_store) | {n for n, count in mails.items() if count == 0})
        report.duplicate_mails = sum(count - 1 for count in mails.values() if count > 1)
        report.stock_available = self._available()
        held = self.sql(
            "inventory",
            "SELECT coalesce(sum(l.quantity), 0) FROM reservation_lines l JOIN reservations r USING (order_number)"
            " WHERE l.sku = %s AND r.status IN ('HELD', 'COMMITTED')",
            self.sku,
        )
        report.stock_held_or_committed = int(held[0][0])
        report.stock_overshoots = self.overshoots
        report.edits_lost = self._edits_lost()
        return report

    def _histories(self, by_user: dict[str, set[str]]) -> dict[str, Any]:
        mismatches = {}
        for user in set(CUSTOMERS):
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token(user)}"
            seen: set[str] = set()
            page = 0
            while True:
                listing = session.get(f"{self.url}/api/orders", params={"page": page, "size": 100}, timeout=30)
                listing.raise_for_status()
                body = listing.json()
                for order in body["items"]:
                    if any(line["skuCode"] == self.sku for line in order["items"]):
                        seen.add(order["orderNumber"])
                if (page + 1) * 100 >= body["totalItems"]:
                    break
                page += 1
            expected = by_user.get(user, set())
            if seen != expected:
                mismatches[user] = {"missing": sorted(expected - seen), "unexpected": sorted(seen - expected)}
        return mismatches

    def _edits_lost(self) -> int:
        """The store must hold the last edit the admin was told was saved (or a later one, whose answer
        was lost), and product-get must show it once its change stream caught up again."""
        if not self.edits:
            return 0
        from functions.shared import mongo

        stored = mongo.client(self.stack.mongodb_uri)["catalog"]["products"].find_one({"sku": self.sku}) or {}
        edit_number = int(str(stored.get("description", "edit 0")).split()[-1])
        last_saved = int(self.edits[-1].split()[-1])
        lost = max(0, last_saved - edit_number)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = requests.get(f"{self.url}/api/products/{self.sku}", timeout=30).json().get("description")
            if shown == stored.get("description"):
                return lost
            time.sleep(0.5)
        return lost + 1  # the reading view never caught up: edits lost to readers


def _until_answered(call: Callable[[], requests.Response], attempts: int = 20) -> requests.Response:
    for _ in range(attempts - 1):
        answer = call()
        if answer.status_code not in OUTAGE_STATUSES:
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1") or 1))
    return call()


def run_fault(stack: Stack, name: str) -> FaultReport:
    return Phase(stack, FAULTS[name]).run()


def table(reports: list[FaultReport]) -> str:
    """The figures of each fault, one row each, as the closing note wants them."""
    rows = [
        "| fault | recovery s | answers during the outage | placed | lost | duplicate mails | answers 500 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        outage = ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(r.outage_answers.items()))
        recovery = "not recovered" if r.recovery_seconds is None else f"{r.recovery_seconds:.1f}"
        rows.append(
            f"| {r.fault} | {recovery} | {outage or '-'} | {r.placed} | {len(r.lost)} | {r.duplicate_mails} |"
            f" {r.answers[500]} |"
        )
    return "\n".join(rows)
