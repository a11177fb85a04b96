"""Every statement depthsearch runs on Optuna's own tables, through its RDB table models.

Optuna's API has no call for what these do: count a study's trials by state in the database,
take a waiting trial or create a running one inside a lock's transaction, read every trial of
a study without the ORM, read heartbeats' ages, a few attributes, the last finish times and the
best value. Each function runs on a connection its caller opens (and whose transaction it
owns); none opens an engine. An Optuna release that changes its schema changes this file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import optuna
import sqlalchemy
from optuna.storages._rdb import models as _models
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "Counts",
    "add_indexes",
    "best_value",
    "complete_numbers",
    "end_running",
    "first_heartbeat",
    "has_schema",
    "heartbeat_ages",
    "insert_running",
    "read_trials",
    "recent_spans",
    "reservation_counts",
    "state_counts",
    "study_user_attrs",
    "tagged_counts",
    "take_oldest_waiting",
    "unbeaten_running",
    "user_attr_rows",
    "waiting_ids",
    "write_reports",
]

#: SQL that locks study ``:s``'s row ``FOR UPDATE`` (as Optuna's ``create_new_trial`` does to
#: number a trial) and evaluates to 1: the reservation lock takes it in the statement that is
#: granted its advisory lock.
STUDY_ROW_LOCK = (
    "(SELECT count(*) FROM (SELECT 1 FROM studies WHERE study_id = :s FOR UPDATE) AS s)"
)

_TRIAL = _models.TrialModel.__table__
_BEAT = _models.TrialHeartbeatModel.__table__
_STUDY_ATTR = _models.StudyUserAttributeModel.__table__

#: Indexes depthsearch adds to Optuna's ``trials`` table (``create`` makes them): the counts
#: under the reservation lock read the few RUNNING, WAITING and FAIL trials and the highest
#: trial number through them instead of every trial of the study.
_INDEXES = {
    "ix_depthsearch_trials_study_state": "trials (study_id, state)",
    "ix_depthsearch_trials_study_number": "trials (study_id, number)",
    # The confirmations are found by their attribute's key (a few rows of many).
    "ix_depthsearch_trial_user_attributes_key": "trial_user_attributes (key)",
}


def add_indexes(conn: sqlalchemy.Connection) -> None:
    """Creates depthsearch's indexes on Optuna's tables where missing (PostgreSQL, SQLite);
    Optuna ignores them, and its migrations keep or drop them."""
    if conn.dialect.name not in ("postgresql", "sqlite"):
        return
    for name, target in _INDEXES.items():
        conn.execute(sqlalchemy.text(f"CREATE INDEX IF NOT EXISTS {name} ON {target}"))


def has_schema(conn: sqlalchemy.Connection) -> bool:
    """Whether Optuna's schema is complete: its alembic revision, written last, is there."""
    if not sqlalchemy.inspect(conn).has_table("alembic_version"):
        return False
    revision = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
    return revision.first() is not None


def _utcnow() -> datetime:
    # Optuna's RDB storage keeps naive UTC datetimes.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _local(utc: datetime | None) -> datetime | None:
    # As Optuna's TrialModel reads its naive-UTC columns: naive local time.
    if utc is None:
        return None
    return utc.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def state_counts(conn: sqlalchemy.Connection, sid: int) -> dict[TrialState, int]:
    """How many of study ``sid``'s trials are in each state (every state, 0 for none)."""
    query = (
        sqlalchemy.select(_TRIAL.c.state, sqlalchemy.func.count())
        .where(_TRIAL.c.study_id == sid)
        .group_by(_TRIAL.c.state)
    )
    counted = {state: int(n) for state, n in conn.execute(query)}
    return {state: counted.get(state, 0) for state in TrialState}


class Counts(NamedTuple):
    """A study's trials as the reservation counts them: every trial (``total``, by the
    highest number), those RUNNING, WAITING and FAIL, and of the trials tagged with a user
    attribute (the confirmations), those finished (COMPLETE or PRUNED), RUNNING and WAITING."""

    total: int
    running: int
    waiting: int
    failed: int
    tagged_finished: int = 0
    tagged_running: int = 0
    tagged_waiting: int = 0


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _tagged(sid: Any, key: Any, states: Sequence[TrialState]) -> Any:
    """The count of study ``sid``'s trials in ``states`` that carry user attribute ``key``,
    read from the attribute's rows (:data:`_INDEXES` keeps them few to find)."""
    attr = _models.TrialUserAttributeModel.__table__
    trial = _TRIAL.alias()  # not correlated with the trials of the query around it
    return (
        sqlalchemy.select(sqlalchemy.func.count())
        .select_from(attr.join(trial, trial.c.trial_id == attr.c.trial_id))
        .where(attr.c.key == key, trial.c.study_id == sid, trial.c.state.in_(tuple(states)))
        .scalar_subquery()
    )


def _highest(sid: Any) -> sqlalchemy.Select[Any]:
    """Study ``sid``'s highest trial number (by index; NULL for none)."""
    return sqlalchemy.select(sqlalchemy.func.max(_TRIAL.c.number)).where(_TRIAL.c.study_id == sid)


def _after(highest: int | None) -> int:
    """The number the next trial takes: trial numbers are 0, 1, 2, ... in order of creation
    (Optuna numbers a trial by the trials before it, under the study's row lock)."""
    return 0 if highest is None else int(highest) + 1


@functools.cache
def _reservation_query() -> sqlalchemy.Select[Any]:
    """:func:`reservation_counts`' statement, built once (with its aliases, about a
    millisecond of SQLAlchemy's time to build, against 30 microseconds to run on SQLite)."""
    sid: Any = sqlalchemy.bindparam("sid")
    tag: Any = sqlalchemy.bindparam("tag")
    of_study = _TRIAL.c.study_id == sid
    few = (TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)
    return sqlalchemy.select(
        _highest(sid).scalar_subquery(),
        *(sqlalchemy.func.count().filter(_TRIAL.c.state == s) for s in few),
        _tagged(sid, tag, _FINISHED),
        _tagged(sid, tag, (TrialState.RUNNING,)),
        _tagged(sid, tag, (TrialState.WAITING,)),
    ).where(of_study, _TRIAL.c.state.in_(few))


def reservation_counts(conn: sqlalchemy.Connection, sid: int, tag: str) -> Counts:
    """Study ``sid``'s :class:`Counts` in one round trip, read through the indexes: the
    highest trial number and the few RUNNING, WAITING and FAIL rows, not every trial; and the
    trials tagged ``tag`` (confirmations) by state.
    """
    top, *rest = conn.execute(_reservation_query(), {"sid": sid, "tag": tag}).one()
    return Counts(_after(top), *(int(n or 0) for n in rest))


def tagged_counts(conn: sqlalchemy.Connection, sid: int, tag: str) -> dict[TrialState, int]:
    """How many of study ``sid``'s trials tagged ``tag`` are in each state."""
    attr = _models.TrialUserAttributeModel.__table__
    query = (
        sqlalchemy.select(_TRIAL.c.state, sqlalchemy.func.count())
        .select_from(attr.join(_TRIAL, _TRIAL.c.trial_id == attr.c.trial_id))
        .where(attr.c.key == tag, _TRIAL.c.study_id == sid)
        .group_by(_TRIAL.c.state)
    )
    counted = {state: int(n) for state, n in conn.execute(query)}
    return {state: counted.get(state, 0) for state in TrialState}


@functools.cache
def _take_oldest_statement() -> Any:
    sid: Any = sqlalchemy.bindparam("sid")
    oldest = (
        sqlalchemy.select(_TRIAL.c.trial_id)
        .where(_TRIAL.c.study_id == sid, _TRIAL.c.state == TrialState.WAITING)
        .order_by(_TRIAL.c.trial_id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        sqlalchemy.update(_TRIAL)
        .where(_TRIAL.c.trial_id == oldest)
        .values(
            {
                _TRIAL.c.state: TrialState.RUNNING,
                _TRIAL.c.datetime_start: sqlalchemy.bindparam("start"),
            }
        )
        .returning(_TRIAL.c.trial_id)
    )


def take_oldest_waiting(conn: sqlalchemy.Connection, sid: int) -> int | None:
    """Sets study ``sid``'s oldest WAITING trial RUNNING, skipping rows another transaction
    holds (PostgreSQL); its id, or ``None``. Writes what Optuna's
    ``set_trial_state_values(RUNNING)`` writes for a waiting trial."""
    taken = conn.execute(_take_oldest_statement(), {"sid": sid, "start": _utcnow()}).scalar()
    return None if taken is None else int(taken)


def next_number(conn: sqlalchemy.Connection, sid: int) -> int:
    """The number study ``sid``'s next trial takes: its highest plus one."""
    return _after(conn.execute(_highest(sid)).scalar())


def insert_running(conn: sqlalchemy.Connection, sid: int, number: int) -> tuple[int, FrozenTrial]:
    """A new RUNNING trial of study ``sid`` numbered ``number`` (the caller holds the study's
    row lock, or SQLite's write lock, as Optuna's ``create_new_trial`` does to number it): its
    id, and the trial as Optuna's ``create_new_trial`` hands it to its cache."""
    start = _utcnow()
    created = conn.execute(
        sqlalchemy.insert(_TRIAL)
        .values(
            {
                _TRIAL.c.number: number,
                _TRIAL.c.study_id: sid,
                _TRIAL.c.state: TrialState.RUNNING,
                _TRIAL.c.datetime_start: start,
            }
        )
        .returning(_TRIAL.c.trial_id)
    ).scalar_one()
    return int(created), FrozenTrial(
        number=number,
        state=TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=_local(start),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=int(created),
    )


@functools.cache
def _end_statements() -> tuple[Any, ...]:
    """:func:`end_running`'s statements, built once with bound parameters."""
    values = _models.TrialValueModel.__table__
    tid: Any = sqlalchemy.bindparam("tid")
    return (
        sqlalchemy.update(_TRIAL)
        .where(_TRIAL.c.trial_id == tid, _TRIAL.c.state == TrialState.RUNNING)
        .values(
            {
                _TRIAL.c.state: sqlalchemy.bindparam("state"),
                _TRIAL.c.datetime_complete: sqlalchemy.bindparam("done"),
            }
        ),
        sqlalchemy.delete(values).where(values.c.trial_id == tid),
        sqlalchemy.insert(values),
    )


def end_running(
    conn: sqlalchemy.Connection, trial_id: int, state: TrialState, values: Sequence[float] | None
) -> bool:
    """Ends RUNNING trial ``trial_id`` in the finished ``state`` with ``values`` (one per
    objective), as Optuna's ``set_trial_state_values`` writes it (its completion time in naive
    UTC), in the caller's transaction and in three statements instead of the ORM's round
    trips. False, and nothing written, when the trial is not RUNNING (another worker ended
    it)."""
    end, drop_values, add_values = _end_statements()
    done = conn.execute(end, {"tid": trial_id, "state": state, "done": _utcnow()})
    if done.rowcount != 1:
        return False
    if values is not None:
        conn.execute(drop_values, {"tid": trial_id})
        rows = []
        for objective, value in enumerate(values):
            stored, kind = _models.TrialValueModel.value_to_stored_repr(value)
            rows.append(
                {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
            )
        conn.execute(add_values, rows)
    return True


@functools.cache
def _first_heartbeat_statement() -> Any:
    tid: Any = sqlalchemy.bindparam("tid", type_=sqlalchemy.Integer)
    beaten = sqlalchemy.select(_BEAT.c.trial_id).where(_BEAT.c.trial_id == tid)
    return sqlalchemy.insert(_BEAT).from_select(
        [_BEAT.c.trial_id, _BEAT.c.heartbeat],
        sqlalchemy.select(tid, sqlalchemy.func.current_timestamp()).where(~beaten.exists()),
    )


def first_heartbeat(conn: sqlalchemy.Connection, trial_id: int) -> None:
    """Records trial ``trial_id``'s first heartbeat as Optuna's ``record_heartbeat`` does
    (the database's clock), unless it has one."""
    conn.execute(_first_heartbeat_statement(), {"tid": trial_id})


def waiting_ids(conn: sqlalchemy.Connection, sid: int) -> list[int]:
    """Study ``sid``'s WAITING trials' ids, oldest first."""
    query = (
        sqlalchemy.select(_TRIAL.c.trial_id)
        .where(_TRIAL.c.study_id == sid, _TRIAL.c.state == TrialState.WAITING)
        .order_by(_TRIAL.c.trial_id)
    )
    return [int(t) for t in conn.scalars(query)]


def unbeaten_running(conn: sqlalchemy.Connection, sid: int) -> set[int]:
    """Ids of study ``sid``'s RUNNING trials that never recorded a heartbeat."""
    query = (
        sqlalchemy.select(_TRIAL.c.trial_id)
        .outerjoin(_BEAT, _BEAT.c.trial_id == _TRIAL.c.trial_id)
        .where(
            _TRIAL.c.study_id == sid,
            _TRIAL.c.state == TrialState.RUNNING,
            _BEAT.c.trial_id.is_(None),
        )
    )
    return {int(t) for t in conn.scalars(query)}


def complete_numbers(conn: sqlalchemy.Connection, sid: int, known: int) -> set[int] | None:
    """The numbers of study ``sid``'s COMPLETE trials; None when there are ``known`` of
    them (a complete trial stays complete: the count says whether any came since)."""
    complete = (_TRIAL.c.study_id == sid, _TRIAL.c.state == TrialState.COMPLETE)
    if conn.scalar(sqlalchemy.select(sqlalchemy.func.count()).where(*complete)) == known:
        return None
    return {int(n) for n in conn.scalars(sqlalchemy.select(_TRIAL.c.number).where(*complete))}


def study_user_attrs(conn: sqlalchemy.Connection, sid: int) -> dict[str, Any]:
    """Study ``sid``'s user attributes."""
    rows = conn.execute(
        sqlalchemy.select(_STUDY_ATTR.c.key, _STUDY_ATTR.c.value_json).where(
            _STUDY_ATTR.c.study_id == sid
        )
    )
    return {key: json.loads(value) for key, value in rows}


def read_trials(
    conn: sqlalchemy.Connection,
    sid: int,
    states: Sequence[TrialState] | None = None,
    *,
    tagged: str | None = None,
    numbers: Collection[int] | None = None,
) -> list[FrozenTrial]:
    """Every trial of study ``sid`` (of ``states`` only, only those with the user
    attribute ``tagged`` and only those ``numbers``, when given), as Optuna's
    ``RDBStorage`` builds them, in six plain queries (one per table) on ``conn``, which the
    caller opens in one snapshot.

    Optuna's own read loads ORM objects with ``selectinload``: about 18 s for a 20,000-trial
    study here; this reads the same rows without the ORM, and parses each distinct
    distribution once.
    """
    rows = _Rows(conn, _of_study(sid, states, tagged, numbers))
    trial = _TRIAL
    base = conn.execute(
        sqlalchemy.select(
            trial.c.trial_id,
            trial.c.number,
            trial.c.state,
            trial.c.datetime_start,
            trial.c.datetime_complete,
        )
        .where(rows.of_study)
        .order_by(trial.c.trial_id)
    ).all()
    params, dists = rows.params()
    values, steps = rows.values(), rows.steps()
    user = rows.attrs(_models.TrialUserAttributeModel)
    system = rows.attrs(_models.TrialSystemAttributeModel)
    out = []
    for tid, number, state, start, complete in base:
        objectives = values.get(tid)
        out.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[objectives[k] for k in sorted(objectives)] if objectives else None,
                datetime_start=_local(start),
                datetime_complete=_local(complete),
                params=params.get(tid, {}),
                distributions=dists.get(tid, {}),
                user_attrs=user.get(tid, {}),
                system_attrs=system.get(tid, {}),
                intermediate_values=steps.get(tid, {}),
                trial_id=tid,
            )
        )
    return out


def _of_study(
    sid: int,
    states: Sequence[TrialState] | None,
    tagged: str | None,
    numbers: Collection[int] | None = None,
) -> Any:
    """The condition on the trial table: study ``sid``, ``states``, the ``tagged`` attribute,
    the trial ``numbers``."""
    trial = _TRIAL
    of_study = trial.c.study_id == sid
    if states is not None:
        of_study = sqlalchemy.and_(of_study, trial.c.state.in_(tuple(states)))
    if numbers is not None:
        of_study = sqlalchemy.and_(of_study, trial.c.number.in_(sorted(numbers)))
    if tagged is not None:
        attr = _models.TrialUserAttributeModel.__table__
        with_tag = sqlalchemy.select(attr.c.trial_id).where(attr.c.key == tagged)
        of_study = sqlalchemy.and_(of_study, trial.c.trial_id.in_(with_tag))
    return of_study


class _Rows:
    """One table's rows of the trials ``of_study``, by trial id."""

    def __init__(self, conn: sqlalchemy.Connection, of_study: Any) -> None:
        self.conn, self.of_study = conn, of_study

    def of(self, table: Any, *columns: str, order: Any = None) -> Any:
        query = sqlalchemy.select(table.c.trial_id, *(table.c[c] for c in columns)).join(
            _TRIAL, _TRIAL.c.trial_id == table.c.trial_id
        )
        query = query.where(self.of_study)
        if order is not None:
            query = query.order_by(order)
        return self.conn.execute(query)

    def params(
        self,
    ) -> tuple[
        dict[int, dict[str, Any]], dict[int, dict[str, optuna.distributions.BaseDistribution]]
    ]:
        params: dict[int, dict[str, Any]] = {}
        dists: dict[int, dict[str, optuna.distributions.BaseDistribution]] = {}
        parsed: dict[str, optuna.distributions.BaseDistribution] = {}
        table = _models.TrialParamModel.__table__
        for tid, name, value, dist_json in self.of(
            table, "param_name", "param_value", "distribution_json", order=table.c.param_id
        ):
            dist = parsed.get(dist_json)
            if dist is None:
                dist = parsed[dist_json] = optuna.distributions.json_to_distribution(dist_json)
            params.setdefault(tid, {})[name] = dist.to_external_repr(value)
            dists.setdefault(tid, {})[name] = dist
        return params, dists

    def values(self) -> dict[int, dict[int, float]]:
        values: dict[int, dict[int, float]] = {}
        model = _models.TrialValueModel
        to_value = model.stored_repr_to_value
        for tid, objective, value, kind in self.of(
            model.__table__, "objective", "value", "value_type"
        ):
            values.setdefault(tid, {})[objective] = to_value(value, kind)
        return values

    def steps(self) -> dict[int, dict[int, float]]:
        steps: dict[int, dict[int, float]] = {}
        model = _models.TrialIntermediateValueModel
        to_step = model.stored_repr_to_intermediate_value
        columns = ("step", "intermediate_value", "intermediate_value_type")
        for tid, step, value, kind in self.of(model.__table__, *columns):
            steps.setdefault(tid, {})[step] = to_step(value, kind)
        return steps

    def attrs(self, model: Any) -> dict[int, dict[str, Any]]:
        got: dict[int, dict[str, Any]] = {}
        for tid, key, value_json in self.of(model.__table__, "key", "value_json"):
            got.setdefault(tid, {})[key] = json.loads(value_json)
        return got


def heartbeat_ages(conn: sqlalchemy.Connection, sid: int) -> dict[int, float | None]:
    """Seconds since each of study ``sid``'s RUNNING trials last beat, by the database's
    clock, keyed by trial number (trials that never beat are absent)."""
    beat, trial = _BEAT, _TRIAL
    if conn.dialect.name == "sqlite":
        age: Any = (
            sqlalchemy.func.julianday("now") - sqlalchemy.func.julianday(beat.c.heartbeat)
        ) * 86400
    else:
        age = sqlalchemy.extract("epoch", sqlalchemy.func.localtimestamp() - beat.c.heartbeat)
    rows = conn.execute(
        sqlalchemy.select(trial.c.number, age)
        .join(trial, trial.c.trial_id == beat.c.trial_id)
        .where(trial.c.study_id == sid, trial.c.state == TrialState.RUNNING)
    ).all()
    return {int(n): None if a is None else float(a) for n, a in rows}


def user_attr_rows(
    conn: sqlalchemy.Connection, sid: int, keys: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """The user attributes ``keys`` of study ``sid``'s trials that have any, by trial id."""
    attr = _models.TrialUserAttributeModel.__table__
    rows = conn.execute(
        sqlalchemy.select(attr.c.trial_id, attr.c.key, attr.c.value_json)
        .join(_TRIAL, _TRIAL.c.trial_id == attr.c.trial_id)
        .where(_TRIAL.c.study_id == sid, attr.c.key.in_(tuple(keys)))
    ).all()
    by_trial: dict[int, dict[str, Any]] = {}
    for tid, key, value in rows:
        by_trial.setdefault(int(tid), {})[key] = json.loads(value)
    return by_trial


def recent_spans(
    conn: sqlalchemy.Connection, sid: int, states: Sequence[TrialState], n: int
) -> list[tuple[datetime, datetime]]:
    """``(start, end)`` of study ``sid``'s last ``n`` trials in ``states`` to end, newest end
    first (naive local time, as Optuna gives datetimes)."""
    rows = conn.execute(
        sqlalchemy.select(_TRIAL.c.datetime_start, _TRIAL.c.datetime_complete)
        .where(
            _TRIAL.c.study_id == sid,
            _TRIAL.c.state.in_(tuple(states)),
            _TRIAL.c.datetime_start.is_not(None),
            _TRIAL.c.datetime_complete.is_not(None),
        )
        .order_by(_TRIAL.c.datetime_complete.desc())
        .limit(n)
    ).all()
    spans = [(_local(start), _local(end)) for start, end in rows]
    return [(start, end) for start, end in spans if start is not None and end is not None]


def best_value(
    conn: sqlalchemy.Connection, sid: int, *, untagged: str | None = None
) -> tuple[float, int] | None:
    """``(value, number)`` of study ``sid``'s complete trial with the lowest first objective
    (ties: the lower number), among those without the user attribute ``untagged`` (the
    search's own trials: no confirmation) when given; ``None`` when none is complete."""
    trial, value = _models.TrialModel, _models.TrialValueModel
    query = (
        sqlalchemy.select(value.value, trial.number)
        .join(trial, trial.trial_id == value.trial_id)
        .where(
            trial.study_id == sid,
            trial.state == TrialState.COMPLETE,
            value.objective == 0,
            value.value.is_not(None),
        )
        .order_by(value.value, trial.number)
        .limit(1)
    )
    if untagged is not None:
        attr = _models.TrialUserAttributeModel
        tagged = sqlalchemy.select(attr.trial_id).where(attr.key == untagged)
        query = query.where(trial.trial_id.not_in(tagged))
    row = conn.execute(query).first()
    if row is None or row[0] is None:  # the query excludes NULL values; typed optional
        return None
    return float(row[0]), int(row[1])


@functools.cache
def _report_statements() -> tuple[Any, ...]:
    """:func:`write_reports`' statements, built once with bound parameters (building them
    cost SQLAlchemy about as much as running them on SQLite)."""
    values = _models.TrialIntermediateValueModel.__table__
    attrs = _models.TrialUserAttributeModel.__table__
    tid: Any = sqlalchemy.bindparam("tid")
    return (
        sqlalchemy.select(_TRIAL.c.state).where(_TRIAL.c.trial_id == tid).with_for_update(),
        sqlalchemy.delete(values).where(
            values.c.trial_id == tid,
            values.c.step.in_(sqlalchemy.bindparam("keys", expanding=True)),
        ),
        sqlalchemy.insert(values),
        sqlalchemy.delete(attrs).where(
            attrs.c.trial_id == tid, attrs.c.key.in_(sqlalchemy.bindparam("keys", expanding=True))
        ),
        sqlalchemy.insert(attrs),
    )


def write_reports(
    conn: sqlalchemy.Connection, trial_id: int, values: dict[int, float], attrs: dict[str, Any]
) -> bool:
    """Trial ``trial_id``'s intermediate values (by step) and user attributes, in the
    caller's transaction, with its row locked while it is RUNNING (as Optuna's writes check
    it): one round trip per table instead of one transaction per value. False, and nothing
    written, when the trial is not RUNNING (another worker ended it)."""
    state_of, drop_values, add_values, drop_attrs, add_attrs = _report_statements()
    if conn.execute(state_of, {"tid": trial_id}).scalar() != TrialState.RUNNING:
        return False
    if values:
        conn.execute(drop_values, {"tid": trial_id, "keys": list(values)})
        rows = []
        for step, value in values.items():
            stored, kind = _models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                value
            )
            rows.append(
                {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
        conn.execute(add_values, rows)
    if attrs:
        conn.execute(drop_attrs, {"tid": trial_id, "keys": list(attrs)})
        conn.execute(
            add_attrs,
            [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()
            ],
        )
    return True
