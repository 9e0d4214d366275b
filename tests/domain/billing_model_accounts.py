"""The billing model's account side: operators' credit adjustments, and PR jobs that hold,
capture or release credits as they run."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from domain import job_queue, jobs, ledger
from domain.pull_requests import OpenedPullRequest
from outbox.db import transaction
from outbox.retry import RetryPolicy
from tests.domain.billing_model_state import ModelState
from tests.domain.billing_reference import ZERO
from tests.domain.billing_support import NOW
from tests.domain.jobs_world import spec

#: A PR job's attempts before it fails for good.
JOB_ATTEMPTS = 3
JOB_POLICY = RetryPolicy(base_seconds=60, max_attempts=JOB_ATTEMPTS, jitter=0)


class AccountSide(ModelState):
    """The rules of the model that adjust credits and run PR jobs."""

    # -- operators' adjustments

    @rule(who=st.integers(0, 1), amount=st.decimals("-60", "60", places=1))
    def adjust(self, who: int, amount: Decimal) -> None:
        """`outbox credits adjust`: either sign; a negative one beyond `available` is refused."""
        if amount == 0:
            return
        account = self.accounts[who]
        key = f"adjust:{self.tag}:{len(self.adjustments)}"
        books = self.books[account]
        refused = amount < 0 and -amount > books.available
        try:
            with transaction(self.runtime.sessions) as session:
                ledger.adjust(session, account, amount, key=key, reason="operator", now=NOW)
        except ledger.InsufficientCredits:
            assert refused, f"adjustment {amount} refused with {books.available} available"
            return
        assert not refused, f"adjustment {amount} accepted with {books.available} available"
        self.adjustments.append((key, account, amount))
        if amount > 0:
            books.credit(amount)
        else:
            books.balance += amount

    @precondition(lambda self: self.adjustments)
    @rule(pick=st.integers(0, 99), same=st.booleans())
    def adjust_again(self, pick: int, same: bool) -> None:
        """The same adjustment again is a quiet no-op; its key reused for another is refused."""
        key, account, amount = self.adjustments[pick % len(self.adjustments)]
        other = amount if same else amount * 2
        try:
            with transaction(self.runtime.sessions) as session:
                entry = ledger.adjust(session, account, other, key=key, reason="operator",
                                      now=NOW)  # fmt: skip
        except Exception as exc:  # the refusal, whatever it is called
            assert not same, f"the same adjustment again was refused: {exc!r}"
            return
        assert entry is None
        assert same, f"key {key} reused for {other} credits instead of {amount} was not refused"

    # -- PR jobs

    @rule(
        who=st.integers(0, 1),
        credits=st.sampled_from(
            [ZERO, Decimal("0.5"), Decimal(3), Decimal(20), Decimal(85), Decimal(100)]
        ),
        claim=st.booleans(),
    )
    def submit_job(self, who: int, credits: Decimal, claim: bool) -> None:
        """`outbox jobs submit`, and maybe a worker taking the job at once."""
        account = self.accounts[who]
        job_spec = spec(account=self.login(account), installation=account,
                        repository=self.repo(account), required_credits=credits)  # fmt: skip
        with transaction(self.runtime.sessions) as session:
            job_id = jobs.submit_job(session, job_spec, now=self.job_clock).id
        self.jobs[job_id] = {"account": account, "credits": credits, "status": "pending",
                             "attempts": 0, "claimed": None}  # fmt: skip
        if claim:
            self.claims(job_id)

    def jobs_in(self, *statuses: str) -> list[int]:
        return sorted(j for j, job in self.jobs.items() if job["status"] in statuses)

    @precondition(lambda self: self.jobs_in("pending", "validated"))
    @rule(pick=st.integers(0, 99))
    def claim_job(self, pick: int) -> None:
        """A worker takes a job: its first claim reserves its credits (or fails the job)."""
        candidates = self.jobs_in("pending", "validated")
        self.claims(candidates[pick % len(candidates)])

    def claims(self, job_id: int) -> None:
        job = self.jobs[job_id]
        books = self.books[job["account"]]
        self.job_clock += timedelta(days=1)
        with transaction(self.runtime.sessions) as session:
            outcome = job_queue.claim_job(session, job_id, now=self.job_clock, policy=JOB_POLICY,
                                     lease=timedelta(minutes=10), owner=f"w{job_id}")  # fmt: skip
        if job["status"] == "pending" and job["credits"] > 0:
            if books.available < job["credits"]:
                assert outcome.failed is not None, f"job {job_id} reserved what is not there"
                job["status"] = "failed"
                return
            books.holds[job_id] = job["credits"]
        assert outcome.claimed is not None, f"job {job_id} not claimed: {outcome.failed}"
        job.update(status="running", claimed=outcome.claimed, attempts=job["attempts"] + 1)

    @precondition(lambda self: self.jobs_in("running"))
    @rule(pick=st.integers(0, 99), end=st.sampled_from(["success", "failure", "retry"]))
    def finish_job(self, pick: int, end: str) -> None:
        """The pull request opened (charged once), GitHub refused (released), or a technical
        failure (the hold kept, failed once its attempts are used up)."""
        running = self.jobs_in("running")
        job_id = running[pick % len(running)]
        job = self.jobs[job_id]
        books = self.books[job["account"]]
        self.job_clock += timedelta(minutes=1)
        with transaction(self.runtime.sessions) as session:
            if end == "success":
                opened = OpenedPullRequest(job_id, f"https://github.test/pull/{job_id}", False)
                assert job_queue.succeed(session, job["claimed"], opened, now=self.job_clock,
                                    meter_event_name="pr_jobs")  # fmt: skip
            elif end == "failure":
                assert job_queue.fail(session, job["claimed"], "refused", now=self.job_clock)
            else:
                job_queue.retry_later(session, job["claimed"], "GitHub is down", now=self.job_clock,
                                 policy=JOB_POLICY)  # fmt: skip
        if end == "success":
            job["status"] = "success"
            if job_id in books.holds:
                books.capture(job_id)
        elif end == "failure" or job["attempts"] >= JOB_ATTEMPTS:
            job["status"] = "failed"
            if job_id in books.holds:
                books.release(job_id)
        else:
            job["status"] = "validated"

    @precondition(lambda self: self.jobs_in("failed"))
    @rule(pick=st.integers(0, 99))
    def retry_job(self, pick: int) -> None:
        """`outbox jobs retry`: a failed job goes back to pending, to reserve anew."""
        failed = self.jobs_in("failed")
        job_id = failed[pick % len(failed)]
        with transaction(self.runtime.sessions) as session:
            jobs.retry_now(session, job_id, now=self.job_clock)
        self.jobs[job_id].update(status="pending", attempts=0)
