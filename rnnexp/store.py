"""The tracking store, and the one definition of what rnnexp records about a run.

`Store` is where runs are tracked: an SQLite file (`sqlite:///mlflow.db`, the default), a database
server (`postgresql://`, `mysql://`) or an MLflow tracking server (`http(s)://`). It owns the URI
(a server URL's `user:password@` split out, and handed to MLflow's variables by
`hand_over_credentials`), the lock that serialises schema changes on an SQLite file, the checks
that a store can take runs, and every query rnnexp makes of it.

`RunRecord` is what rnnexp records about a run besides MLflow's own params and metrics, as the
run's tags: `to_tags` writes them and `from_tags` reads them, and nothing else names a tag.

Imports only the standard library at module level: `rnnexp-train --help` and a config error pay
for no MLflow import.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import typing
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

DEFAULT_URI = "sqlite:///mlflow.db"  # an SQLite file in the folder a command runs from
SQLITE = "sqlite:///"
SCHEMES = ("sqlite:///", "postgresql://", "mysql://", "http://", "https://", "databricks")
TIMEOUT_S = 5  # how long the store check waits for a server or database to answer
MAX_RESULTS = 50000  # every run of an experiment, in one search

# --- secrets in URIs ----------------------------------------------------------------------------

MASK = "***"  # what a secret is shown and logged as
_URI_CREDENTIALS = re.compile(r"(?P<scheme>https?://)(?P<user>[^/:@\s]*)(?::(?P<password>[^/@\s]*))?@(?P<rest>.*)")
# A URI's userinfo, in any text: from the scheme's `://` (which Hydra writes `\://`, and a repr
# `\\://`) to the last `@` before a quote or the line's end. A password may hold `@`, `/`, `:` or
# a space, so nothing short of that is safe to show; masking more that holds another `@` costs
# nothing. (A quote ends a value in a message; in a file of values, a line does.)
_USERINFO = re.compile(r"\b([A-Za-z][\w+.-]*\\*://)[^\n'\"`]*@")
_USERINFO_TO_LINE_END = re.compile(r"\b([A-Za-z][\w+.-]*\\*://)[^\n]*@")


def masked_uri(text: str, lines: bool = False) -> str:
    """`text` with the user name and password of every URI in it masked:
    `http://alice:pw@host` -> `http://***@host`. `lines`: `text` is a file of values, one a line,
    where a quote can be part of a password."""
    return (_USERINFO_TO_LINE_END if lines else _USERINFO).sub(lambda found: f"{found.group(1)}{MASK}@", text)


def shown_uri(uri: str) -> str:
    """A URI as a message shows it: everything before its last `@` masked, spaces and all."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}://{MASK}@{rest.rsplit('@', 1)[1]}" if sep and "@" in rest else masked_uri(uri)


def ambiguous_userinfo(uri: str) -> bool:
    """A userinfo that parsers split differently: more than one `@`, an `@` after a `/`, `?` or
    `#` of the authority, or a space, quote or backslash in it."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest or scheme.lower() == "sqlite":  # a file's path may hold an @
        return False
    userinfo = rest.rsplit("@", 1)[0]
    return rest.count("@") > 1 or any(c in userinfo for c in "/?#\\'\" \t\n")


def _refused(key: str, value: Any, allowed: str) -> Exception:
    from rnnexp.config import ConfigError  # (config imports this module)

    return ConfigError(key, value, allowed)


class StoreGone(OSError):
    """The SQLite file a run writes to was deleted or replaced under it. SQLite would go on
    writing into the file it has open, gone from the folder, and every metric after would be
    lost without a word."""


# --- the run record ------------------------------------------------------------------------------

RECORD_VERSION = "1"  # the `rnnexp.record` tag: what `from_tags` reads; a store written before it reads as 1
_VERSION_TAG = "rnnexp.record"
_PARENT_TAG = "mlflow.parentRunId"
_NAME_TAG = "mlflow.runName"
_UI_COMMIT_TAG = "mlflow.source.git.commit"  # shown by the UI on the run page

# Where a run is tracked and how it started, not what it is: the top-level config keys left out
# of a run's identity (`config_hash`, which a resumed sweep finds its finished jobs by). With the
# seed and how a run is shown, they are also what runs of one variant may differ in (`variant_hash`).
NOT_IDENTITY = ("tracking", "resume", "resume_sweep", "hydra")
NOT_VARIANT = (
    *NOT_IDENTITY,
    "seed",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)


def is_variant_key(key: str) -> bool:
    """Whether the dotted config key `key` can change a result (runs differing in it are different
    variants, never averaged together)."""
    return not any(key == k or key.startswith(k + ".") for k in NOT_VARIANT)


@dataclass(frozen=True)
class RunRecord:
    """What rnnexp records about a run, as its tags (each field is the tag of its name). A run's
    record is written in parts: its identity when it starts, its outcome when it ends; `to_tags`
    writes the fields that are set. Field types are what a reader gets: `from_tags` parses."""

    # what the run is (rnnexp.train, when it starts)
    pattern: str | None = None  # 1, 2, 3 (Goodfellow et al. 2016, §10.2) or baseline
    model: str | None = None
    cell: str | None = None  # rnn, gru, lstm; none for a model without one
    task: str | None = None
    distance: str | None = None  # the task's distance, or none
    length: str | None = None
    solved: str | None = None  # keys given as None that the run solved as it started (task.length), logged solved
    metric: str | None = None  # the task's own metric, logged as test/<metric>
    better: str | None = None  # higher or lower
    seed: str | None = None
    config_hash: str | None = None  # its identity: a resumed sweep skips a FINISHED twin
    variant_hash: str | None = None  # what it is less its seed: runs a report may average
    monitor: str | None = None  # what the checkpoint is chosen on (trainer.select_on), e.g. val/acc
    monitor_mode: str | None = None  # max or min
    checkpoint_dir: str | None = None  # its checkpoints' folder, for a resume on this host
    smoke: bool = False  # trainer=smoke: a check of a config, not a result
    lr_from: str | None = None  # the selection experiment its learning rate was chosen in
    lr_rule: str | None = None
    lr_choice: str | None = None
    lr_grid: str | None = None  # the rates stage 1 tried, e.g. 0.001,0.003,0.01: is the choice at an edge?
    lr_informative: str | None = None  # false: every rate scored alike where it was chosen
    dataset: str | None = None
    dataset_digest: str | None = None
    git_commit: str | None = None
    git_dirty: str | None = None  # true, false, unknown
    host: str | None = None  # MLflow has no heartbeat: host and pid tell a live run from a dead process's
    cpu: str | None = None  # the CPU(s) that ran it (`A; then B` once resumed on another): float rounding varies
    pid: int | None = None
    # how it ended
    stopped_by: str | None = None  # plateau, diverged, budget
    best_val: float | None = None  # the best value of `monitor`: what a sweeper and stage 1 read
    logged_model: str | None = None
    error: str | None = None
    resumed: int = 0  # how many times it was resumed
    resumed_after: str | None = None  # the error it stopped with before its last resume
    # a sweep's parent run (rnnexp.sweep)
    sweep: bool = False
    sweep_dir: str | None = None
    span_key: str | None = None  # a span sweep's (hydra/sweeper=span): the key its distances are
    # an evaluation of a trained run (rnnexp.evaluation)
    evaluation: bool = False
    evaluated_run: str | None = None
    evaluated_with: str | None = None  # the overrides, or none
    # a reproduction (rnnexp.reproduce)
    reproduces: str | None = None
    reproduced: str | None = None  # exactly, within_rounding, no
    reproduced_exactly: bool | None = None
    # MLflow's own
    parent_run: str | None = None
    name: str | None = None
    version: str = RECORD_VERSION

    @property
    def kind(self) -> str:
        """sweep (a sweep's parent), evaluation, smoke, or training: the one rule that tells a
        training run, whose result counts, from the rest."""
        return "sweep" if self.sweep else "evaluation" if self.evaluation else "smoke" if self.smoke else "training"

    def to_tags(self) -> dict[str, str]:
        """The fields that differ from their defaults, as tags (booleans `true`/`false`)."""
        tags: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (value == f.default and f.name != "version"):
                continue
            tag = _TAG_OF.get(f.name, f.name)
            tags[tag] = (
                str(value).lower() if isinstance(value, bool) else repr(value) if f.name == "best_val" else str(value)
            )
        if self.git_commit not in (None, "unknown"):
            tags[_UI_COMMIT_TAG] = self.git_commit
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, Any], strict: Collection[str] = ()) -> RunRecord:
        """The record of a run whose tags are `tags`; a number that does not parse or is out of
        range (a store edited by hand: a pid of 0 or -1 would name a process group, or every
        process) reads as missing, or for a field named in `strict` raises ValueError
        `field='value'`. Other tags are ignored."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = tags.get(_TAG_OF.get(f.name, f.name))
            if raw is None or (isinstance(raw, float) and raw != raw):  # absent, or NaN in a DataFrame
                continue
            raw = str(raw)
            kind = _TYPES[f.name]
            if kind is bool:
                values[f.name] = raw == "true"
            elif kind in (int, float):
                try:
                    values[f.name] = kind(raw)
                    if f.name in _POSITIVE and values[f.name] <= 0:
                        raise ValueError
                except ValueError:
                    values.pop(f.name, None)
                    if f.name in strict:
                        raise ValueError(f"{f.name}={raw!r}") from None
                    continue
            else:
                values[f.name] = raw
        return cls(**values)

    @classmethod
    def of(cls, run: Run, strict: Collection[str] = ()) -> RunRecord:
        return cls.from_tags(run.data.tags, strict)

    @staticmethod
    def this_process() -> dict[str, Any]:
        """`host` and `pid` of this process: a run it (re)opens says who holds it."""
        return {"host": socket.gethostname(), "pid": os.getpid()}


_TAG_OF = {"version": _VERSION_TAG, "parent_run": _PARENT_TAG, "name": _NAME_TAG}
_POSITIVE = {"pid"}
_TYPES = {  # each field's type, less its None
    name: next(t for t in (bool, int, float, str) if t is hint or t in typing.get_args(hint))
    for name, hint in typing.get_type_hints(RunRecord).items()
}


def _file_lock(path: str):
    """An exclusive lock on the file `path` (`filelock`), one object per path in a process, so that
    a lock taken again inside itself goes on instead of waiting forever; the file is kept (a lock
    file removed while another process waits on it would let a third in)."""
    from filelock import FileLock

    return FileLock(path, is_singleton=True, preserve_lock_file=True)


def record_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow's table of runs (`mlflow.search_runs`: `params.*`, `metrics.*`, `tags.*` columns)
    with its tags read as records: each record field a column of its name, `kind` beside them, and
    no `tags.*` column left."""
    import pandas as pd

    tag_columns = [c for c in frame.columns if c.startswith("tags.")]
    records = [
        RunRecord.from_tags({c[len("tags.") :]: v for c, v in row.items()})
        for row in frame[tag_columns].to_dict("records")
    ]
    names = [f.name for f in dataclasses.fields(RunRecord)]
    fields_frame = pd.DataFrame(
        [[getattr(r, n) for n in names] + [r.kind] for r in records], columns=[*names, "kind"], index=frame.index
    )
    return pd.concat([frame.drop(columns=tag_columns), fields_frame], axis=1)


# --- the store ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """A tracking store. `Store.parse` splits a server URL's credentials out (a database URL keeps
    its own: SQLAlchemy reads them there); `shown` is the URI as messages print it."""

    uri: str = DEFAULT_URI
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    key: str = "tracking.uri"  # what named it, in errors: a config key or an option (--uri)

    def __repr__(self) -> str:
        return f"Store({self.shown!r})"

    @classmethod
    def parse(cls, uri: str, key: str = "tracking.uri") -> Store:
        """A server URL's `user:password@` goes where MLflow's client takes credentials
        (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, sent as HTTP basic auth), and a
        lone `TOKEN@` to MLFLOW_TRACKING_TOKEN, out of the URL: in it, they would be taken for
        part of the host name. A URL whose userinfo is ambiguous stays as given, for `check` to
        refuse. The scheme is compared in lower case (RFC 3986)."""
        from urllib.parse import unquote

        scheme, sep, rest = uri.partition("://")
        if sep:
            uri = f"{scheme.lower()}://{rest}"
        found = _URI_CREDENTIALS.match(uri)
        if not found or ambiguous_userinfo(uri):
            return cls(uri, {}, key)
        if found.group("password") is None:  # `https://TOKEN@host`: a token, sent as a bearer
            credentials = {"MLFLOW_TRACKING_TOKEN": unquote(found.group("user"))}
        else:
            credentials = {
                "MLFLOW_TRACKING_USERNAME": unquote(found.group("user")),
                "MLFLOW_TRACKING_PASSWORD": unquote(found.group("password")),
            }
        return cls(found.group("scheme") + found.group("rest"), credentials, key)

    def hand_over_credentials(self) -> None:
        """Give the URI's credentials to MLflow's client, which reads them from its variables:
        once, by the command that was given them."""
        os.environ.update(self.credentials)

    @property
    def is_sqlite(self) -> bool:
        return self.uri.startswith(SQLITE)

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    @property
    def is_default(self) -> bool:
        return self.uri == DEFAULT_URI

    @property
    def path(self) -> str:
        """The absolute path of the SQLite file (less any `?options`)."""
        assert self.is_sqlite, self.uri
        return os.path.abspath(self.uri[len(SQLITE) :].split("?", 1)[0])

    @property
    def shown(self) -> str:
        return masked_uri(self.uri)

    def option(self, flag: str = "--uri") -> str:
        """How a printed command names this store (`--uri`, `tracking.uri=`): nothing for the default."""
        import shlex

        # quoted where a shell would split or expand it (a path with a space); a masked password's
        # *** is for the reader to replace, and stays as it is
        shown = shlex.quote(self.shown) if re.search(r"[\s'\"$`\\;&|<>()]", self.shown) else self.shown
        return "" if self.is_default else f" {flag}{'' if flag.endswith('=') else ' '}{shown}"

    # --- checks -----------------------------------------------------------------------------------

    def check(self) -> None:
        """ConfigError for a URI that names no store rnnexp can use, without connecting."""
        if not self.uri.startswith(SCHEMES) and not re.match(r"(postgresql|mysql)\+\w+://", self.uri):
            raise _refused(
                self.key,
                shown_uri(self.uri),
                "a database or server URI starting with "
                + ", ".join(SCHEMES)
                + " (MLflow 3.13+ refuses the ./mlruns file store)",
            )
        if ambiguous_userinfo(self.uri):
            # split at the first `@` (as SQLAlchemy and urllib do), a password's tail would be
            # taken for the host, and shown as one
            raise _refused(
                self.key,
                shown_uri(self.uri),
                "a URI whose user name and password are percent-encoded: write `@` as %40, `/` as %2F, "
                "`:` in the user name as %3A, a space as %20",
            )
        if self.is_sqlite and not os.path.isdir(folder := os.path.dirname(self.path)):
            raise _refused(self.key, self.uri, f"an SQLite file in an existing folder ({folder} is none)")

    def check_exists(self) -> None:
        """For a command that reads runs: ConfigError if the SQLite file is not there (MLflow would
        create an empty store and find nothing in it)."""
        if self.is_sqlite and not os.path.isfile(self.path):
            raise _refused(
                self.key,
                self.uri,
                "an existing SQLite file (no such SQLite file: runs are in the store they were tracked in, "
                "tracking.uri; the default is sqlite:///mlflow.db in the folder rnnexp-train ran from)",
            )
        self.check()

    def check_reachable(self) -> None:
        """Fail before training, not after it, when runs cannot be written here: an SQLite file
        that cannot be written, is not a database, is corrupt inside or has a half-made schema; a
        server that does not answer, or answers but not as MLflow; a database server that does not
        answer. Within seconds, in one line; writes nothing."""
        import tempfile

        if self.is_sqlite:
            try:  # SQLite writes its journal beside the database: the folder must take new files
                with tempfile.NamedTemporaryFile(dir=os.path.dirname(self.path)):
                    pass
            except OSError as err:
                raise _refused(
                    self.key,
                    self.uri,
                    f"an SQLite file in a folder this process can write ({os.path.dirname(self.path)}: {err.strerror})",
                ) from None
            if os.path.exists(self.path):
                with self.lock():  # not while another process creates the schema
                    self._check_sqlite()
        elif self.is_server:
            self._check_server()
        elif self.uri.startswith(("postgresql", "mysql")):
            self._check_database()

    def _auth_header(self) -> str | None:
        import base64

        found = {**{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_TRACKING_")}, **self.credentials}
        if (user := found.get("MLFLOW_TRACKING_USERNAME")) is not None:
            pair = f"{user}:{found.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if token := found.get("MLFLOW_TRACKING_TOKEN"):
            return f"Bearer {token}"
        return None

    def _check_server(self) -> None:
        """One call of MLflow's REST API, with the credentials the client will send: an answer
        that is not MLflow's JSON (a web server's 404 page, a proxy's login form) fails here, not
        in the middle of the run's set-up."""
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
        if (auth := self._auth_header()) is not None:
            request.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                body = answer.read(1 << 20)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise _refused(
                    self.key,
                    self.shown,
                    f"a tracking server that accepts these credentials (HTTP {err.code}: give user:password@ "
                    "in the URI, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)",
                ) from None
            raise _refused(
                self.key, self.shown, f"an MLflow tracking server (its REST API answered HTTP {err.code} {err.reason})"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise _refused(
                self.key, self.shown, f"a tracking server that answers within {TIMEOUT_S} s ({reason})"
            ) from None
        try:
            answer = json.loads(body)
            if "experiments" not in answer and answer != {}:  # {}: a store with no experiment yet
                raise ValueError
        except (ValueError, TypeError):
            raise _refused(
                self.key, self.shown, "an MLflow tracking server (its REST API answered, but not with MLflow's JSON)"
            ) from None

    def _check_database(self) -> None:
        """A database server: connected to with a short timeout (SQLAlchemy, as MLflow connects),
        so that a server down is one line within seconds, not minutes of MLflow's retries."""
        import sqlalchemy

        try:
            url = sqlalchemy.engine.make_url(self.uri)
        except Exception:
            raise _refused(
                self.key,
                self.shown,
                "a database URI as SQLAlchemy reads it (dialect[+driver]://user:password@host[:port]/database)",
            ) from None
        try:  # (psycopg's and the MySQL drivers' connect_timeout, in seconds)
            engine = sqlalchemy.create_engine(
                url, connect_args={"connect_timeout": TIMEOUT_S}, poolclass=sqlalchemy.pool.NullPool
            )
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        except ModuleNotFoundError as err:
            raise _refused(
                self.key,
                self.shown,
                f"a database whose driver is installed (no module {err.name}; "
                "install it, or name an installed one: dialect+driver://...)",
            ) from None
        except Exception as err:
            reason = " ".join(str(getattr(err, "orig", None) or err).split())[:200]
            raise _refused(
                self.key, self.shown, f"a database server that answers within {TIMEOUT_S} s ({masked_uri(reason)})"
            ) from None

    def _check_sqlite(self) -> None:
        import sqlite3

        path = self.path
        try:  # a write that changes nothing, rolled back: fails on a read-only or corrupt file
            con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=20)
            try:
                con.execute("BEGIN IMMEDIATE")
                version = con.execute("PRAGMA user_version").fetchone()[0]
                con.execute(f"PRAGMA user_version = {int(version)}")
                con.rollback()
                # a page overwritten inside leaves the header intact: only reading the pages tells
                problems = [" ".join(row[0].split()) for row in con.execute("PRAGMA quick_check(3)")]
                tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                revision = (
                    (con.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0]
                    if "alembic_version" in tables
                    else None
                )
            finally:
                con.close()
        except sqlite3.Error as err:
            raise _refused(self.key, self.uri, f"a writable SQLite database ({path}: {err})") from None
        if problems != ["ok"]:
            raise _refused(
                self.key,
                self.uri,
                f"an intact SQLite database; {path} is corrupt inside ({'; '.join(problems)}): restore it from a "
                f"backup, or recover what is readable with `sqlite3 {path} .recover`",
            )
        self._check_schema(tables, revision)

    def _check_schema(self, tables: set[str], revision: str | None) -> None:
        """An SQLite store whose schema a migration left half-made (a process killed in it)."""
        if not tables:
            return  # new: MLflow creates the schema
        from mlflow.store.db.utils import _get_latest_schema_revision

        leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        head = _get_latest_schema_revision()
        if leftovers or revision != head:
            found = (
                f"tables {', '.join(leftovers)} left by a migration cut short"
                if leftovers
                else f"schema version {revision}, not {head}"
            )
            drop = "; ".join(f"DROP TABLE {t}" for t in leftovers)
            repair = (f"sqlite3 {self.path} '{drop}', then " if leftovers else "") + f"mlflow db upgrade {self.uri}"
            raise _refused(
                self.key,
                self.uri,
                f"a store whose schema is complete; {self.path} has {found}: back it up, then repair it with "
                f"`{repair}`",
            )

    # --- locks and the file under a run -------------------------------------------------------------

    def lock(self):
        """Held while a process checks or creates an SQLite store's schema, or creates an
        experiment in it: MLflow does neither atomically, and processes started together on a new
        store would interleave their migrations (and leave it broken) or create the experiment
        twice. A file lock beside the database (`FILE.lock`); a server or another database
        serialises these itself."""
        return _file_lock(self.path + ".lock") if self.is_sqlite else nullcontext()

    def resume_lock(self, run_id: str):
        """Held while a resume checks and sets its run's status: for an SQLite store, the store's
        own lock; for a server, a lock file per run on this host (MLflow has no compare-and-set:
        two hosts resuming one sweep in the same instant are not told apart)."""
        import hashlib
        import tempfile

        if self.is_sqlite:
            return self.lock()
        name = hashlib.sha256(f"{self.uri}\n{run_id}".encode()).hexdigest()[:16]
        return _file_lock(os.path.join(tempfile.gettempdir(), f"rnnexp-resume-{name}.lock"))

    def file_identity(self) -> tuple[str, tuple[int, int]] | None:
        """An SQLite store's path and identity (device, inode); None for a server or database, or
        a file not made yet."""
        if not self.is_sqlite:
            return None
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        return self.path, (found.st_dev, found.st_ino)

    @staticmethod
    def check_file(known: tuple[str, tuple[int, int]] | None) -> None:
        """StoreGone if the SQLite file of `file_identity` is no longer the one the run opened."""
        if known is None:
            return
        path, identity = known
        try:
            found = os.stat(path)
        except FileNotFoundError:
            raise StoreGone(f"{path} was deleted") from None
        if (found.st_dev, found.st_ino) != identity:
            raise StoreGone(f"{path} was replaced by another file")

    # --- the client ---------------------------------------------------------------------------------

    def client(self) -> MlflowClient:
        """A client of the store, whose schema is created first (under `lock`) if it is new."""
        from mlflow.tracking import MlflowClient

        with self.lock():
            client = MlflowClient(self.uri)
            client.search_experiments(max_results=1)  # MLflow creates or checks the schema on first use
        return client

    def artifact_location(self, folder: str) -> str | None:
        """A new experiment's artifact folder: set for a local store; a server decides its own."""
        from pathlib import Path

        return Path(folder).resolve().as_uri() if self.is_sqlite else None

    def check_artifacts_here(self, experiment: Any, folder: str) -> None:
        """ConfigError where a local store keeps an experiment's artifacts neither beside itself
        nor where this run would put them (`folder`): the store was copied or moved with its
        checkout, and a run of the copy would write its checkpoints and model into the original's
        folder (MLflow keeps an artifact location as an absolute path)."""
        from pathlib import Path
        from urllib.parse import unquote, urlparse

        location = experiment.artifact_location or ""
        if not self.is_sqlite or not location.startswith("file:"):
            return
        kept, home = Path(unquote(urlparse(location).path)), Path(self.path).parent
        if kept == Path(folder).resolve() or kept.is_relative_to(home):
            return
        raise _refused(
            "tracking.uri",
            self.shown,
            f"a store that keeps its artifacts beside it: it keeps those of experiment {experiment.name!r} in "
            f"{kept}, outside {home} (a copied or moved checkout's runs would write there): run where the store "
            "was made, or track into a new store or experiment (tracking.experiment=NAME)",
        )

    def experiment_id(self, client: MlflowClient, name: str, artifacts: str, tags: Mapping[str, str]) -> str:
        """The id of experiment `name`, created if missing (once, whoever else asks at the same
        time) with `tags`, which an existing one is given where it lacks them."""
        with self.lock():
            experiment = client.get_experiment_by_name(name)
            if experiment is not None and experiment.lifecycle_stage != "deleted":
                self.check_artifacts_here(experiment, artifacts)
                for key, value in tags.items():
                    if key not in experiment.tags:
                        client.set_experiment_tag(experiment.experiment_id, key, value)
                return experiment.experiment_id
            return client.create_experiment(name, artifact_location=self.artifact_location(artifacts), tags=dict(tags))

    # --- queries: the only place that filters runs by their record -----------------------------------

    @staticmethod
    def experiment_named(client: MlflowClient, name: str) -> str | None:
        """The id of the active experiment `name`, if there is one."""
        found = client.get_experiment_by_name(name)
        return None if found is None or found.lifecycle_stage == "deleted" else found.experiment_id

    @staticmethod
    def experiment_names(client: MlflowClient) -> str:
        """The active experiments' names, for a message: `a, b` or `none`."""
        from mlflow.entities import ViewType

        return ", ".join(sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))) or "none"

    @staticmethod
    def training_runs(client: MlflowClient, experiment_id: str, finished: bool = True) -> list[Run]:
        """The training runs of an experiment (not a sweep's parent, an evaluation or a smoke
        run), FINISHED ones only unless `finished` is False."""
        where = "attributes.status = 'FINISHED'" if finished else ""
        runs = client.search_runs([experiment_id], where, max_results=MAX_RESULTS)
        return [r for r in runs if RunRecord.of(r).kind == "training" and "seed" in r.data.params]

    @staticmethod
    def selection_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
        """Stage 1 of the learning-rate recipe: its training runs, of any status, that were given
        a rate (not ones that took theirs from a selection)."""
        return [
            r
            for r in Store.training_runs(client, experiment_id, finished=False)
            if "optim.lr" in r.data.params and r.data.params.get("optim.lr_from", "None") == "None"
        ]

    @staticmethod
    def children(client: MlflowClient, parent: Run, status: str | None = None) -> list[Run]:
        """The runs of the sweep whose parent run is `parent`."""
        where = f"tags.{_PARENT_TAG} = '{parent.info.run_id}'" + (
            f" and attributes.status = '{status}'" if status else ""
        )
        return client.search_runs([parent.info.experiment_id], where, max_results=MAX_RESULTS)

    @staticmethod
    def finished_twin(client: MlflowClient, parent: Run, config_hash: str) -> str | None:
        """The id of a FINISHED run of the sweep `parent` with the same identity, if there is one."""
        where = (
            f"tags.{_PARENT_TAG} = '{parent.info.run_id}' and tags.config_hash = '{config_hash}' "
            "and attributes.status = 'FINISHED'"
        )
        runs = client.search_runs([parent.info.experiment_id], where, max_results=1)
        return runs[0].info.run_id if runs else None

    @staticmethod
    def evaluation_of(client: MlflowClient, run: Run, evaluated_with: str) -> str | None:
        """The id of a FINISHED evaluation of `run` with these overrides, if there is one."""
        where = f"tags.evaluated_run = '{run.info.run_id}' and attributes.status = 'FINISHED'"
        found = client.search_runs([run.info.experiment_id], where, max_results=1000)
        return next((r.info.run_id for r in found if RunRecord.of(r).evaluated_with == evaluated_with), None)

    @staticmethod
    def sweep_parents(client: MlflowClient, limit: int = 5) -> list[str]:
        experiments = [e.experiment_id for e in client.search_experiments()]
        return [r.info.run_id for r in client.search_runs(experiments, "tags.sweep = 'true'", max_results=limit)]

    def runs_frame(self, experiment_id: str, parent: str | None = None) -> pd.DataFrame:
        """The runs of an experiment (or of the sweep `parent`) as MLflow's table, with their
        records as columns (`record_columns`)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        where = f"tags.{_PARENT_TAG} = '{parent}'" if parent else ""
        frame = mlflow.search_runs([experiment_id], where, output_format="pandas")  # every run: it pages
        return record_columns(frame)

    def mark_stale(self, client: MlflowClient) -> list[str]:
        """Mark KILLED every RUNNING run started on this host whose process no longer exists (it
        died without closing its run: SIGKILL, power loss). Runs from other hosts are left alone:
        this host cannot see their processes. Returns the ids marked."""
        host, marked = socket.gethostname(), []
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return marked
        for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=MAX_RESULTS):
            record = RunRecord.of(run)
            if record.host != host or record.pid is None or process_alive(record.pid):
                continue
            write(
                client,
                run.info.run_id,
                RunRecord(error=f"process {record.pid} on {host} ended without closing the run"),
            )
            client.set_terminated(run.info.run_id, "KILLED")
            marked.append(run.info.run_id)
        return marked


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def write(client: MlflowClient, run_id: str, record: RunRecord) -> None:
    """Record the set fields of `record` on the run (one call)."""
    from mlflow.entities import RunTag

    tags = record.to_tags()
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def forget(client: MlflowClient, run_id: str, *names: str) -> None:
    """Remove record fields from a run (an error the run has been resumed from)."""
    for name in names:
        client.delete_tag(run_id, _TAG_OF.get(name, name))


# --- a store failing under a run ---------------------------------------------------------------

# what MLflow's database store raises when its database cannot serve a call (down, locked, full, read-only)
_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"


def store_failure(error: BaseException) -> str | None:
    """Why the store failed, in a few words, if `error` (or what caused it) is the store failing:
    a server or database that does not answer, a database file deleted, read-only or full.
    None for anything else."""
    import sqlite3

    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = " ".join(str(cause).split())
        if isinstance(cause, StoreGone):
            return text
        if isinstance(cause, (requests.ConnectionError, requests.Timeout, sqlite3.OperationalError)):
            return _reason(text)
        if isinstance(cause, MlflowException) and (
            text.startswith("API request to") or cause.error_code == _UNAVAILABLE
        ):
            return _reason(text)
        if type(cause).__module__.startswith(("sqlalchemy", "psycopg")) and "OperationalError" in type(cause).__name__:
            return _reason(text)
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def one_try() -> Iterator[None]:
    """MLflow's HTTP client tries once, given 3 s, not with its retries: for what a run does after
    its store has failed (the client has waited out its retries already), so that it ends in
    seconds, and still closes its run if the store is back."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    before = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:  # a sweep's next job in this process retries as usual
        for key, value in before.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def _reason(text: str) -> str:
    """The telling part of a store error: `Connection refused`, `attempt to write a readonly
    database`, `database or disk is full`."""
    found = re.search(
        r"\[Errno -?\d+\] ([^\"')]+)|\(sqlite3\.OperationalError\) ([^\[(]+)|"
        r"(too many \d+ error responses)|(Read timed out)|connection failed: ([^\n]+?)(?: Is the|$)",
        text,
    )
    reason = next((g for g in found.groups() if g), None) if found else None
    return masked_uri((reason or text).strip())[:200]


# --- commands that read the store -----------------------------------------------------------------


def uri_option():
    """The `--uri` option of every command that reads the store, for argparse's `parents=`."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--uri", default=DEFAULT_URI, help=f"the tracking store (default: {DEFAULT_URI})")
    return parser


def opened(uri: str, key: str = "--uri") -> Store:
    """The existing store a command's `--uri` names, checked (ConfigError naming `key`), its
    credentials handed over to MLflow."""
    store = Store.parse(uri, key)
    store.check_exists()
    store.hand_over_credentials()
    store.check_reachable()
    return store
