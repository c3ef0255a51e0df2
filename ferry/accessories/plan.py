"""What `up`, `reboot` and `down` do to one accessory, decided from what the host shows (pure).

- ``up`` creates what is missing (directories, password, container) and starts a stopped
  container; it never replaces a running one, even when its image changed (that is
  ``reboot``'s job, said in the plan's note), so running ``up`` is always safe.
- ``reboot`` replaces the container (a new image digest or settings); the volume stays.
- ``down`` stops and removes the container; the volume and the password are never touched.
- PostgreSQL's data directory records the major that made it (``PG_VERSION``). Starting
  another major on it would fail or worse, so both ``up`` and ``reboot`` refuse, and say how to
  dump and restore.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import argv as A
from .spec import Accessory, Exporter


@dataclass(frozen=True)
class Observed:
    """The container by that name, from docker inspect."""

    status: str  # running, exited, restarting, created...
    running: bool
    started: str
    digest: str
    spec: str
    restarts: int = 0

    @classmethod
    def parse(cls, line: str) -> "Observed | None":
        parts = line.strip().split("|")
        if len(parts) != 6:
            return None
        status, running, started, digest, spec, restarts = parts
        return cls(status, running == "true", started, digest, spec, int(restarts or 0))

    def to_json(self) -> dict:
        return {"status": self.status, "running": self.running, "started": self.started,
                "digest": self.digest, "restarts": self.restarts}


@dataclass(frozen=True)
class Facts:
    container: Observed | None
    data_version: str | None  # PG_VERSION of the volume; None when it holds no cluster
    password: bool  # the password file exists on the host


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # "run" (argv on the host) | "password" (generate and write the file) | "health"
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    action: str
    steps: tuple[Step, ...] = ()
    note: str = ""
    refused: str | None = None
    hint: str | None = None

    @property
    def changes(self) -> bool:
        return bool(self.steps)

    def to_json(self) -> dict:
        return {"action": self.action, "steps": [s.name for s in self.steps], "note": self.note}


def major_refusal(acc: Accessory, data_version: str) -> tuple[str, str]:
    """The message (and how to get there) when the data was made by another major."""
    vol = acc.volume_dir
    msg = (f"accessories.{acc.name}: the data in {vol} was made by PostgreSQL {data_version} and "
           f"version = \"{acc.version}\" asks for PostgreSQL {acc.version}: a major upgrade needs a dump "
           "and a restore; nothing was changed")
    hint = (f"keep version = \"{data_version}\" and run `ferry accessory backup {acc.name}`; then "
            f"`ferry accessory down {acc.name}`, move {vol} aside on the host, set version = \"{acc.version}\", "
            f"`ferry accessory up {acc.name}` and `ferry accessory restore {acc.name} FILE` with the dump "
            f"from {acc.backups_dir}")
    return msg, hint


def decide(action: str, facts: Facts, acc: Accessory, image_ref: str, docker: tuple[str, ...]) -> Plan:
    if action == "down":
        if facts.container is None:
            return Plan(action, note="not running: nothing to do")
        return Plan(action, (Step(f"stop {acc.container}", "run", tuple(A.stop_argv(docker, acc))),
                             Step(f"remove {acc.container} (the volume stays)", "run", tuple(A.rm_argv(docker, acc)))))
    if acc.kind == "postgres" and facts.data_version and facts.data_version != acc.version:
        msg, hint = major_refusal(acc, facts.data_version)
        return Plan(action, refused=msg, hint=hint)
    if acc.has_password and not facts.password and facts.data_version:
        return Plan(action, refused=f"accessories.{acc.name}: {acc.volume_dir} holds a database but its password "
                                    f"file {acc.password_file} is gone; nothing was changed",
                    hint="put the password file back (0600, owned by the server's uid), or move the volume aside "
                         "to start an empty database")
    prepare: list[Step] = [Step("prepare the volume and backups directories", "run", tuple(A.prepare_argv(acc)))]
    if acc.has_password and not facts.password:
        prepare.append(Step(f"generate the password ({acc.password_file}, 0600)", "password"))
    run = Step(f"start {acc.container} ({image_ref})", "run", tuple(A.run_argv(docker, acc, image_ref)))
    health = Step(f"wait until {acc.name} answers", "health")
    want = A.spec_hash(acc, image_ref)
    c = facts.container
    if action == "up":
        if c is None:
            return Plan(action, (*prepare, run, health), note="created")
        if not c.running:
            return Plan(action, (*prepare, Step(f"start {acc.container}", "run", tuple(A.start_argv(docker, acc))),
                                 health), note="started")
        note = "running" if c.spec == want else (
            f"running; its image or settings differ from ferry.toml: `ferry accessory reboot {acc.name}` applies them")
        return Plan(action, note=note)
    if action == "reboot":
        steps: list[Step] = list(prepare)
        if c is not None:
            steps += [Step(f"stop {acc.container}", "run", tuple(A.stop_argv(docker, acc))),
                      Step(f"remove {acc.container}", "run", tuple(A.rm_argv(docker, acc)))]
        return Plan(action, (*steps, run, health),
                    note="same image and settings, restarted" if c is not None and c.spec == want else "replaced")
    raise ValueError(f"unknown action {action!r}")


def rotation(files: list[str], prefix: str, keep: int) -> list[str]:
    """The backups to delete: of the files named ``<prefix>-<UTC stamp>.dump``, all but the
    newest ``keep`` (the stamp sorts as text). Anything else in the directory is not ours."""
    ours = sorted(f for f in files if f.startswith(prefix + "-") and f.endswith(".dump"))
    return ours[:-keep] if keep > 0 and len(ours) > keep else []


def decide_exporter(action: str, current: Observed | None, acc: Accessory, ex: Exporter | None, image_ref: str,
                    docker: tuple[str, ...]) -> tuple[Step, ...]:
    """The exporter is stateless: `up` and `reboot` (re)create it whenever its spec changed,
    `down` removes it. ``ex`` None (monitoring off): remove one a previous config started."""
    rm = Step(f"remove {ex.container if ex else acc.container + '-exporter'}", "run",
              tuple(A.exporter_rm_argv(docker, ex or Exporter(acc.container + "-exporter", "", 0))))
    if action == "down" or ex is None:
        return (rm,) if current is not None else ()
    run = Step(f"start {ex.container} on 127.0.0.1:{ex.port}", "run", tuple(A.exporter_run_argv(docker, acc, ex, image_ref)))
    health = Step(f"wait until {ex.container} scrapes {acc.name}", "exporter-health")
    if current is None:
        return (run, health)
    if current.spec != A.exporter_hash(acc, ex, image_ref) or not current.running:
        return (rm, run, health)
    return ()
