"""Registry storage in PostgreSQL: instances, the version counter and the change log deltas are read from.

Every replica of the registry reads and writes the same rows, so they agree; a restart
loses nothing. A change locks the version row first, then the instance rows it touches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from functions.registry.model import (
    Applications,
    Instance,
    InstanceRef,
    KnativeService,
    ManagedInstance,
    Register,
    Renew,
    RenewOutcome,
    Status,
    SyncReport,
    cancelled,
    hashcode,
    knative_instance,
    registered,
    renewal,
)
from functions.shared import db

Change = Callable[[Instance], Instance]


class RegistryStore(Protocol):
    def register(self, cmd: Register, now_ms: int) -> Instance: ...

    def renew(self, cmd: Renew, now_ms: int) -> RenewOutcome: ...

    def change(self, ref: InstanceRef, change: Change) -> Instance | None: ...

    def cancel(self, ref: InstanceRef, now_ms: int) -> Instance | None: ...

    def applications(self) -> Applications: ...

    def application(self, app: str) -> list[Instance]: ...

    def instance(self, instance_id: str, app: str | None = None) -> Instance | None: ...

    def delta(self, since_ms: int) -> Applications: ...

    def evict(self, now_ms: int, changes_before_ms: int) -> list[Instance]: ...

    def sync_knative(
        self, namespace: str, services: Sequence[KnativeService], now_ms: int, lease_seconds: int
    ) -> SyncReport: ...


COLUMNS = "app, instance_id, managed, status, overridden_status, record, last_renewal_ms"


class PostgresRegistryStore:
    def __init__(self, url: str) -> None:
        self.url = url

    # --- changes ------------------------------------------------------------------------

    def register(self, cmd: Register, now_ms: int) -> Instance:
        with db.transaction(self.url) as conn:
            _lock_version(conn)
            existing = _locked(conn, [(cmd.info.app, cmd.info.instance_id)]).get((cmd.info.app, cmd.info.instance_id))
            # A Knative Service's application is its own: another instance there would take its traffic.
            owned = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM instances WHERE app = %s AND managed) AS owned", (cmd.info.app,)
            ).fetchone()
            if owned is not None and owned["owned"]:
                raise ManagedInstance(cmd.info.app)
            instance = registered(existing, cmd, now_ms)
            _upsert(conn, [instance])
            _record_changes(conn, [instance], now_ms)
            return instance

    def renew(self, cmd: Renew, now_ms: int) -> RenewOutcome:
        # No version lock: a heartbeat is not a change clients need to hear about.
        with db.transaction(self.url) as conn:
            existing = _locked(conn, [(cmd.ref.app, cmd.ref.instance_id)]).get((cmd.ref.app, cmd.ref.instance_id))
            if existing is None:
                return RenewOutcome.UNKNOWN_INSTANCE
            outcome, renewed = renewal(existing, cmd, now_ms)
            if outcome is RenewOutcome.RENEWED:
                conn.execute(
                    "UPDATE instances SET last_renewal_ms = %s, expires_ms = %s WHERE app = %s AND instance_id = %s",
                    (renewed.lease.last_renewal_ms, renewed.expires_ms, cmd.ref.app, cmd.ref.instance_id),
                )
            return outcome

    def change(self, ref: InstanceRef, change: Change) -> Instance | None:
        """Applies `change` to one instance (a status override or its removal); None if there is none."""
        with db.transaction(self.url) as conn:
            _lock_version(conn)
            existing = _locked(conn, [(ref.app, ref.instance_id)]).get((ref.app, ref.instance_id))
            if existing is None:
                return None
            instance = change(existing)
            _upsert(conn, [instance])
            _record_changes(conn, [instance], instance.last_updated_ms)
            return instance

    def cancel(self, ref: InstanceRef, now_ms: int) -> Instance | None:
        with db.transaction(self.url) as conn:
            _lock_version(conn)
            existing = _locked(conn, [(ref.app, ref.instance_id)]).get((ref.app, ref.instance_id))
            if existing is None:
                return None
            if existing.managed:
                raise ManagedInstance(ref.instance_id)
            _delete(conn, [existing.key])
            gone = cancelled(existing, now_ms)
            _record_changes(conn, [gone], now_ms)
            return gone

    def evict(self, now_ms: int, changes_before_ms: int) -> list[Instance]:
        """Removes instances whose lease ran out and change records older than the delta retention.

        A cheap look first, so the readers that call this on their way in rarely take a lock.
        """
        with db.transaction(self.url) as conn:
            due = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM instances WHERE NOT managed AND expires_ms < %s) AS expired,"
                " EXISTS (SELECT 1 FROM changes WHERE changed_ms < %s) AS stale",
                (now_ms, changes_before_ms),
            ).fetchone()
        assert due is not None
        evicted: list[Instance] = []
        if due["expired"]:
            with db.transaction(self.url) as conn:
                _lock_version(conn)
                # Re-checked under the row locks: a heartbeat that got in first keeps its instance.
                rows = conn.execute(
                    f"DELETE FROM instances WHERE NOT managed AND expires_ms < %s RETURNING {COLUMNS}", (now_ms,)
                ).fetchall()
                evicted = [cancelled(_instance(row), now_ms) for row in rows]
                _record_changes(conn, evicted, now_ms)
        if due["stale"]:
            with db.transaction(self.url) as conn:
                conn.execute("DELETE FROM changes WHERE changed_ms < %s", (changes_before_ms,))
        return evicted

    def sync_knative(
        self, namespace: str, services: Sequence[KnativeService], now_ms: int, lease_seconds: int
    ) -> SyncReport:
        """Makes the managed instances of `namespace` exactly the given Knative Services."""
        wanted = {(s.name.upper(), f"{s.name}.{s.namespace}"): s for s in services}
        with db.transaction(self.url) as conn:
            _lock_version(conn)
            existing = _locked(conn, wanted, managed_in=namespace)
            changed: list[Instance] = []
            unchanged: list[Instance] = []
            for key, service in sorted(wanted.items()):
                instance, is_change = knative_instance(service, existing.get(key), now_ms, lease_seconds)
                (changed if is_change else unchanged).append(instance)
            gone = [i for key, i in sorted(existing.items()) if i.managed and key not in wanted]
            _upsert(conn, changed)
            conn.execute(
                "UPDATE instances SET last_renewal_ms = %s"
                " FROM unnest(%s::text[], %s::text[]) AS k(app, instance_id)"
                " WHERE instances.app = k.app AND instances.instance_id = k.instance_id",
                (now_ms, [i.info.app for i in unchanged], [i.info.instance_id for i in unchanged]),
            )
            _delete(conn, [i.key for i in gone])
            removed = [cancelled(i, now_ms) for i in gone]
            _record_changes(conn, [*changed, *removed], now_ms)
        added = sum(1 for i in changed if existing.get(i.key) is None)
        return SyncReport(added=added, modified=len(changed) - added, removed=len(gone), unchanged=len(unchanged))

    # --- reads --------------------------------------------------------------------------

    def applications(self) -> Applications:
        with _snapshot(self.url) as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM instances ORDER BY app, instance_id").fetchall()
            instances = tuple(_instance(row) for row in rows)
            return Applications(_version(conn), hashcode(i.status for i in instances), instances)

    def application(self, app: str) -> list[Instance]:
        with db.transaction(self.url) as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM instances WHERE app = %s ORDER BY instance_id", (app,)
            ).fetchall()
        return [_instance(row) for row in rows]

    def instance(self, instance_id: str, app: str | None = None) -> Instance | None:
        with db.transaction(self.url) as conn:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM instances WHERE instance_id = %s AND (%s::text IS NULL OR app = %s)"
                " ORDER BY app LIMIT 1",
                (instance_id, app, app),
            ).fetchone()
        return _instance(row) if row is not None else None

    def delta(self, since_ms: int) -> Applications:
        """The instances changed since `since_ms`, each once in its latest state, with the full registry's
        hashcode and version read in the same snapshot."""
        with _snapshot(self.url) as conn:
            records = conn.execute(
                "SELECT DISTINCT ON (app, instance_id) record FROM changes WHERE changed_ms >= %s"
                " ORDER BY app, instance_id, version DESC",
                (since_ms,),
            ).fetchall()
            counts = conn.execute("SELECT status, count(*) AS n FROM instances GROUP BY status").fetchall()
            statuses = [Status(row["status"]) for row in counts for _ in range(row["n"])]
            changed = tuple(Instance.from_record(row["record"]) for row in records)
            return Applications(_version(conn), hashcode(statuses), changed)


@contextmanager
def _snapshot(url: str) -> Iterator[db.Connection]:
    """A read-only transaction whose statements all see one snapshot (version, rows, hashcode agree)."""
    with db.transaction(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield conn


def _lock_version(conn: db.Connection) -> None:
    conn.execute("SELECT version FROM registry_version FOR UPDATE")


def _version(conn: db.Connection) -> int:
    row = conn.execute("SELECT version FROM registry_version").fetchone()
    assert row is not None, "registry_version is empty: apply functions/registry/schema.sql"
    return int(row["version"])


def _locked(
    conn: db.Connection, keys: Iterable[tuple[str, str]], managed_in: str | None = None
) -> dict[tuple[str, str], Instance]:
    """The instances with these keys (and, with `managed_in`, every managed one of that namespace), locked."""
    keys = list(keys)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM instances"
        " WHERE (app, instance_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " OR (%s::text IS NOT NULL AND managed AND instance_id LIKE '%%.' || %s::text)"
        " ORDER BY app, instance_id FOR UPDATE",
        ([k[0] for k in keys], [k[1] for k in keys], managed_in, managed_in),
    ).fetchall()
    found = {(row["app"], row["instance_id"]): _instance(row) for row in rows}
    if managed_in is not None:
        suffix = "." + managed_in
        found = {k: i for k, i in found.items() if not i.managed or k[1].endswith(suffix)}
    return found


def _upsert(conn: db.Connection, instances: Sequence[Instance]) -> None:
    if not instances:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO instances (app, instance_id, managed, status, overridden_status, record, last_renewal_ms,"
            " expires_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (app, instance_id) DO UPDATE SET managed = excluded.managed, status = excluded.status,"
            " overridden_status = excluded.overridden_status, record = excluded.record,"
            " last_renewal_ms = excluded.last_renewal_ms, expires_ms = excluded.expires_ms",
            [
                (
                    i.info.app,
                    i.info.instance_id,
                    i.managed,
                    i.status.value,
                    i.overridden_status.value,
                    Jsonb(i.as_record()),
                    i.lease.last_renewal_ms,
                    i.expires_ms,
                )
                for i in instances
            ],
        )


def _delete(conn: db.Connection, keys: Sequence[tuple[str, str]]) -> None:
    if keys:
        conn.execute(
            "DELETE FROM instances WHERE (app, instance_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )


def _record_changes(conn: db.Connection, instances: Sequence[Instance], now_ms: int) -> None:
    """Gives each change the next version and logs it for deltas (the version row is already locked)."""
    if not instances:
        return
    row = conn.execute(
        "UPDATE registry_version SET version = version + %s RETURNING version", (len(instances),)
    ).fetchone()
    assert row is not None
    first = int(row["version"]) - len(instances) + 1
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO changes (version, app, instance_id, action, record, changed_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (first + n, i.info.app, i.info.instance_id, i.action.value, Jsonb(i.as_record()), now_ms)
                for n, i in enumerate(instances)
            ],
        )


def _instance(row: Mapping[str, Any]) -> Instance:
    record = row["record"]
    # Heartbeats move only the column, not the record (lease: registered, last renewal, up, eviction).
    record["lease"][1] = int(row["last_renewal_ms"])
    return Instance.from_record(record)
