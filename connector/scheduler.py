"""APScheduler in-process: a poll job per polling flow, the schedule job, the due-runs job.

:meth:`Scheduler.sync` reconciles jobs with the flows table (a flow switched on from another
process is picked up within ``sync_interval`` seconds). :meth:`Scheduler.tick` does one round
synchronously, which is how tests and the demo step time deterministically.
"""
from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler

from . import store
from .engine import Executor, run_due
from .errors import APIError
from .host import Host
from .intake import fire_schedule, poll_flow
from .sdk import PollTrigger, ScheduleTrigger
from .store import Flow

log = logging.getLogger("connector.scheduler")


class Scheduler:
    """Own the APScheduler instance; ``executor`` receives work as soon as a poll queues it."""

    def __init__(self, host: Host, executor: Executor | None = None, sync_interval: float = 5.0,
                 leader_interval: float = 3.0):
        self.host = host
        self.executor = executor
        self.sync_interval = sync_interval
        self.leader_interval = leader_interval
        self.leader = None
        self.aps = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 60})
        self._intervals: dict[int, int] = {}

    def start(self, lead: bool = True) -> None:
        """Start the jobs; with ``lead`` this process competes to run polls and schedules.

        Every process runs the due-runs job; only the leader (connector.leader) runs polls,
        schedules and retention, and a follower takes over when the leader dies.
        """
        if self.executor is not None:
            self.aps.add_job(self.executor.dispatch, "interval",
                             seconds=self.host.settings.dispatch_interval, id="due-runs")
        if lead:
            from .leader import LeaderLock

            self.leader = LeaderLock(self.host.settings)
            self.aps.add_job(self.campaign, "interval", seconds=self.leader_interval,
                             id="leadership")
        self.aps.start()
        if lead:
            self.campaign()

    def campaign(self) -> bool:
        """Try to lead; the first time this process leads, start the leader's jobs."""
        held = self.leader.try_acquire()
        if held and self.aps.get_job("sync") is None:
            self.aps.add_job(self.sync, "interval", seconds=self.sync_interval, id="sync")
            self.aps.add_job(self.fire_schedules, "interval", seconds=1, id="schedules")
            self.aps.add_job(self.prune, "interval", hours=1, id="retention")
            self.sync()
        elif not held and self.aps.get_job("sync") is not None:
            for job_id in ["sync", "schedules", "retention",
                           *[f"poll:{flow_id}" for flow_id in self._intervals]]:
                if self.aps.get_job(job_id) is not None:
                    self.aps.remove_job(job_id)
            self._intervals.clear()
        return held

    @property
    def is_leader(self) -> bool:
        return self.leader is not None and self.leader.held

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=True)
        if self.leader is not None:
            self.leader.release()

    def poll_flows(self) -> list[Flow]:
        """Return the enabled flows whose trigger polls."""
        return self._enabled(PollTrigger)

    def schedule_flows(self) -> list[Flow]:
        """Return the enabled flows whose trigger is a schedule."""
        return self._enabled(ScheduleTrigger)

    def _enabled(self, kind: type) -> list[Flow]:
        flows = []
        for flow in Flow.select().where(Flow.enabled == True):  # noqa: E712
            try:
                trigger = self.host.catalog.trigger(flow.trigger_key)
            except Exception:  # a flow whose plugin is no longer installed
                continue
            if isinstance(trigger, kind):
                flows.append(flow)
        return flows

    def fire_schedules(self, now=None) -> int:
        """Queue the due firings of every schedule flow; return how many runs were queued.

        Firings are deduped on their scheduled time, so two schedulers (or a restart in the
        middle) never queue one twice.
        """
        queued = 0
        try:
            for flow in self.schedule_flows():
                try:
                    queued += len(fire_schedule(self.host, flow, now).created)
                except Exception:
                    log.exception("schedule of flow %s failed", flow.name)
        finally:
            _close_db()
        if queued and self.executor is not None:
            self.executor.wake()
        return queued

    def sync(self) -> None:
        """Add, reschedule and remove poll jobs to match the enabled flows."""
        try:
            wanted = {flow.id: flow.poll_interval for flow in self.poll_flows()}
        finally:
            _close_db()
        for flow_id in list(self._intervals):
            if flow_id not in wanted:
                self.aps.remove_job(f"poll:{flow_id}")
                del self._intervals[flow_id]
        for flow_id, interval in wanted.items():
            if self._intervals.get(flow_id) == interval:
                continue
            self.aps.add_job(self.poll, "interval", seconds=interval, args=[flow_id],
                             id=f"poll:{flow_id}", replace_existing=True)
            self._intervals[flow_id] = interval

    def poll(self, flow_id: int) -> int:
        """Poll one flow; return how many runs it queued. Errors are logged, not raised."""
        try:
            flow = Flow.get_or_none(Flow.id == flow_id)
            if flow is None or not flow.enabled:
                return 0
            result = poll_flow(self.host, flow)
            if result.created and self.executor is not None:
                self.executor.wake()
            return len(result.created)
        except APIError as exc:
            log.warning("poll of flow %s failed: %s", flow_id, exc)
            return 0
        except Exception:
            log.exception("poll of flow %s crashed", flow_id)
            return 0
        finally:
            _close_db()

    def prune(self) -> dict:
        """Prune old run history and expired dedupe keys (connector.retention)."""
        from .retention import prune

        try:
            removed = prune(self.host.settings)
            if any(removed.values()):
                log.info("retention: removed %(runs)s runs and %(seen_keys)s expired keys",
                         removed)
            return removed
        except Exception:
            log.exception("retention failed; trying again in an hour")
            return {}
        finally:
            _close_db()

    def tick(self, now=None) -> int:
        """Poll every polling flow once, fire due schedules, run every due run; return runs."""
        for flow in self.poll_flows():
            self.poll(flow.id)
        self.fire_schedules(now)
        return run_due(self.host)


def _close_db() -> None:
    if not store.db.is_closed():
        store.db.close()
