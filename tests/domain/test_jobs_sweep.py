"""The sweeper rings PR jobs and usage reports that are due, like outbox rows."""

from __future__ import annotations

from processors.sweeper import registered_sweep_sources
from tests.domain.jobs_world import World


def test_jobs_and_usage_are_sweep_sources(world: World) -> None:
    sources = {source.name: source for source in registered_sweep_sources()}
    assert {"pr_jobs", "usage_records"} <= set(sources)

    world.install()
    world.link_customer()
    job_id = world.submit()
    with world.sessions() as session:
        assert sources["pr_jobs"].find_due(session, world.now, 10) == [job_id]
        assert sources["usage_records"].find_due(session, world.now, 10) == []
    world.work(job_id)
    [record] = world.usage()
    with world.sessions() as session:
        assert sources["pr_jobs"].find_due(session, world.now, 10) == []
        assert sources["usage_records"].find_due(session, world.now, 10) == [record.id]
