"""The INVALID indexes of a plan's target (:mod:`webapp.core.invalid_indexes`),
read from the live database and named after the failed job that left them."""

from __future__ import annotations

from ..core import invalid_indexes
from ..core.plan import Plan
from ..extensions import db
from ..models import Job, JobStatus
from .catalog import Catalog


def left_by_job(target_name: str, index: dict) -> int | None:
    """The id of the newest failed job on ``target_name`` whose error names
    ``index`` (``{"schema", "name", "table"}``) as the INVALID index it left
    behind (the job process's lock-failure message), or None."""
    named = f"CONCURRENTLY: {index['schema']}.{index['name']} on {index['table']};"
    return db.session.execute(
        db.select(Job.id).where(Job.target == target_name, Job.status == JobStatus.FAILED,
                                Job.error.contains(named, autoescape=True))
        .order_by(Job.id.desc()).limit(1)).scalar()


def attach(catalog: Catalog, target, plan: Plan, drop: bool) -> Plan:
    """``plan`` with the INVALID indexes its PostgreSQL target still has
    (read-only, through the target's read URL), each with ``left_by_job``,
    and, when ``drop``, their drops at its head
    (:func:`webapp.core.invalid_indexes.with_invalid_indexes`). Other
    dialects, and a database that cannot be read now, give ``plan`` unchanged."""
    if plan.dialect != "postgresql":
        return plan
    try:
        found = invalid_indexes.read(catalog.engines.get(catalog.read_url(target)))
    except Exception:  # noqa: BLE001 - the plan stands; the job's own run will say more
        return plan
    for index in found:
        index["left_by_job"] = left_by_job(target.name, index)
    return invalid_indexes.with_invalid_indexes(plan, found, drop)
