"""Periodic jobs of the bounded contexts, run by the scheduler's leader.

A context registers its jobs in its own ``jobs.py`` with :func:`register`; the module is listed
in :data:`JOB_MODULES` so the scheduler imports it. The case scheduler (``cityops.cases.jobs``)
holds the leader lease; while a process holds it, it also runs every registered job whose time
has come, each in its own transaction, so one failing job does not stop the others.

A job must be idempotent at an instant ``now`` (a new leader may run a round again after a
crash): e.g. "generate yesterday's 晨报 unless it is archived already".
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cityops.core.db import Database

log = logging.getLogger("cityops.jobs")

#: Modules that register jobs when imported.
JOB_MODULES: tuple[str, ...] = (
    "cityops.evaluation.jobs",
    "cityops.monitoring.jobs",
    "cityops.flood.jobs",
)


@dataclass
class Job:
    name: str
    every: timedelta
    run: Callable[[Session, datetime], Any]


@dataclass
class JobState:
    last_run: datetime | None = None
    runs: int = 0
    errors: int = 0
    last_error: str | None = None
    last_result: Any = None


_JOBS: dict[str, Job] = {}
_loaded = False
_lock = threading.Lock()


def register(name: str, every: timedelta, run: Callable[[Session, datetime], Any]) -> Job:
    """Register (or replace) the job ``name`` run every ``every`` with ``run(session, now)``."""
    job = Job(name, every, run)
    _JOBS[name] = job
    return job


def registered() -> list[Job]:
    """Every registered job (the job modules imported on first call)."""
    global _loaded
    with _lock:
        if not _loaded:
            for module in JOB_MODULES:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if exc.name is None or not module.startswith(exc.name):
                        raise
            _loaded = True
    return sorted(_JOBS.values(), key=lambda j: j.name)


@dataclass
class JobRunner:
    """Runs the due jobs; keeps each job's state for monitoring and tests."""

    db: Database
    states: dict[str, JobState] = field(default_factory=dict)

    def run_due(self, now: datetime) -> list[str]:
        ran: list[str] = []
        for job in registered():
            st = self.states.setdefault(job.name, JobState())
            if st.last_run is not None and now - st.last_run < job.every:
                continue
            st.last_run = now
            try:
                with self.db.session() as s:  # commits on success, rolls back on error
                    st.last_result = job.run(s, now)
                st.runs += 1
                ran.append(job.name)
            except Exception as exc:
                st.errors += 1
                st.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("job %s failed", job.name)
        return ran
