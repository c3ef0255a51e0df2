"""Backups of a PostgreSQL accessory: a dump taken while a writer commits restores to a
consistent database; rotation keeps backup.keep; the dump goes to S3 (moto's server) and its
time to the monitoring textfile directory."""

from __future__ import annotations

import os
import threading
import time

import psycopg

from .test_postgres_accessory import pg

WRITES = 3000  # the writer stops after this many transactions or WRITE_SECONDS, whichever first
WRITE_SECONDS = 20.0


class Writer(threading.Thread):
    """Single-transaction writes that keep an invariant: the ledger's sum and count equal the
    totals row (a dump that saw half a transaction would break it)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.done = 0
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        deadline = time.monotonic() + WRITE_SECONDS
        try:
            with psycopg.connect(self.url, connect_timeout=5, autocommit=False) as c:
                while self.done < WRITES and time.monotonic() < deadline and not self.stop.is_set():
                    n = self.done + 1
                    c.execute("insert into ledger(amount) values (%s)", (n,))
                    c.execute("update totals set total = total + %s, rows = rows + 1", (n,))
                    c.commit()
                    self.done = n
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def consistent(url: str) -> tuple[int, int]:
    with psycopg.connect(url, connect_timeout=5) as c:
        total, rows = c.execute("select total, rows from totals").fetchone()
        s, n = c.execute("select coalesce(sum(amount), 0), count(*) from ledger").fetchone()
        assert (s, n) == (total, rows), f"ledger {s}/{n} != totals {total}/{rows}"
        return n, total


def test_backup_under_write_load_restores_a_consistent_database(acc_app, moto_endpoint):
    import boto3

    port = acc_app.base_port + 10
    mon = acc_app.tmp / "monitoring"
    acc_app.write(f"""[accessories.db]
kind = "postgres"
port = {port}
backup = {{ keep = 2, s3_bucket = "acc-backups", s3_prefix = "nightly/" }}
""", extra=f'[monitoring]\nenabled = true\nroot = "{mon}"\n')
    s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="acc-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    acc_app.run("accessory", "up", "db")
    url = pg(acc_app, port)
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as c:
        c.execute("create table ledger(id serial primary key, amount bigint not null)")
        c.execute("create table totals(total bigint not null, rows bigint not null)")
        c.execute("insert into totals values (0, 0)")

    writer = Writer(url)
    writer.start()
    deadline = time.monotonic() + 10
    while writer.done < 50 and time.monotonic() < deadline and writer.is_alive():
        time.sleep(0.05)
    assert writer.done >= 50, f"the writer did not get going ({writer.error})"
    before = writer.done
    backups = [acc_app.json("accessory", "backup", "db") for _ in range(3)]
    during = writer.done
    writer.stop.set()
    writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert during > before, "the writer must be committing while the backups run"

    # rotation: three backups, two kept (the newest)
    names = sorted(os.listdir(f"{acc_app.dir}/backups/db"))
    assert names == sorted(os.path.basename(b["file"]) for b in backups[1:])
    assert backups[2]["removed"] == [os.path.basename(backups[0]["file"])]

    # the newest went to S3, byte for byte
    last = backups[-1]
    key = f"nightly/{acc_app.name}/db/{os.path.basename(last['file'])}"
    assert last["s3"] == f"s3://acc-backups/{key}"
    head = s3.head_object(Bucket="acc-backups", Key=key)
    assert head["ContentLength"] == last["bytes"] == os.path.getsize(last["file"])

    # the backup's time for the "backup older than a day" alert
    prom = (mon / "textfile" / f"ferry_accessory_{acc_app.name}_db.prom").read_text()
    assert f'ferry_accessory_backup_last_success_timestamp_seconds{{app="{acc_app.name}",accessory="db"}}' in prom

    # the writer went on after the dump: restoring it goes back to a consistent earlier state
    rows_now, _ = consistent(url)
    r = acc_app.json("accessory", "restore", "db", os.path.basename(last["file"]))
    assert r["restored"] == last["file"]
    rows_restored, total = consistent(url)
    assert 0 < rows_restored <= rows_now
    assert total == rows_restored * (rows_restored + 1) // 2  # exactly the first N transactions


def test_restore_of_a_missing_file_changes_nothing(acc_app):
    port = acc_app.base_port + 10
    acc_app.write(f'[accessories.db]\nkind = "postgres"\nport = {port}\n')
    acc_app.run("accessory", "up", "db")
    acc_app.run("accessory", "exec", "db", "psql", "-c", "create table k(x int); insert into k values (7)")
    r = acc_app.run("accessory", "restore", "db", "db-19700101T000000000Z.dump", check=False)
    assert r.returncode != 0 and "does not exist" in r.stderr and "nothing was changed" in r.stderr
    assert acc_app.run("accessory", "exec", "db", "psql", "-tAc", "select x from k").stdout.strip() == "7"
