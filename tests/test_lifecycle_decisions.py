"""Pure lifecycle decisions over tables of cases: reminders, automatic renewal, approval, expiry, CRL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.lifecycle.reminders import (
    ReminderDecision,
    crl_refresh_due,
    describe_expiry,
    due_thresholds,
    is_expired,
    reminder_decision,
    request_expired,
    should_auto_renew,
)
from pipeline.lifecycle.renewal import auto_approvable

T = (30, 14, 7, 1)
NOT_AFTER = datetime(2027, 6, 30, 12, 0, tzinfo=UTC)
ISSUED = NOT_AFTER - timedelta(days=365)
D = timedelta(days=1)
H = timedelta(hours=1)
S = timedelta(seconds=1)


def decide(now, *, recorded=(), status="active", pending=False, not_before=ISSUED, not_after=NOT_AFTER, thresholds=T):
    return reminder_decision(
        status=status,
        not_before=not_before,
        not_after=not_after,
        now=now,
        thresholds=thresholds,
        recorded=set(recorded),
        renewal_pending=pending,
    )


@pytest.mark.parametrize(
    ("left", "recorded", "expected"),
    [
        # far from every threshold
        (200 * D, (), None),
        (30 * D + S, (), None),
        # a window opens exactly at the threshold, not a second later
        (30 * D, (), ReminderDecision(30, (30,))),
        (30 * D - S, (), ReminderDecision(30, (30,))),
        # inside a window already recorded: nothing
        (20 * D, (30,), None),
        # the next window opens
        (14 * D, (30,), ReminderDecision(14, (14,))),
        (7 * D - H, (30, 14), ReminderDecision(7, (7,))),
        (23 * H, (30, 14, 7), ReminderDecision(1, (1,))),
        (1 * S, (30, 14, 7), ReminderDecision(1, (1,))),
        # every threshold recorded
        (12 * H, (30, 14, 7, 1), None),
        # downtime: several windows crossed together -> one reminder, the most urgent, all recorded
        (13 * D, (), ReminderDecision(14, (14, 30))),
        (6 * D, (), ReminderDecision(7, (7, 14, 30))),
        (6 * D, (30,), ReminderDecision(7, (7, 14))),
        (2 * H, (30,), ReminderDecision(1, (1, 7, 14))),
        # a missed run is caught up on the next pass, once
        (29 * D + 23 * H, (), ReminderDecision(30, (30,))),
        # expired: never a reminder
        (timedelta(0), (), None),
        (-D, (), None),
        (-400 * D, (30, 14), None),
    ],
)
def test_reminder_windows_and_ledger(left, recorded, expected):
    assert decide(NOT_AFTER - left, recorded=recorded) == expected


@pytest.mark.parametrize("status", ["superseded", "revoked", "expired"])
def test_retired_certificates_are_never_reminded(status):
    assert decide(NOT_AFTER - 6 * D, status=status) is None


def test_pending_renewal_defers_the_reminder_without_recording_it():
    now = NOT_AFTER - 6 * D
    assert decide(now, pending=True) is None
    # the renewal failed and nothing is open any more: the reminder comes, once
    assert decide(now, pending=False) == ReminderDecision(7, (7, 14, 30))


def test_renewed_certificate_is_reminded_afresh_and_its_predecessor_not_at_all():
    old_not_after = NOT_AFTER
    renewed_at = old_not_after - 10 * D
    new_not_after = renewed_at + 365 * D
    assert decide(renewed_at, status="superseded", recorded=(30, 14)) is None
    assert decide(renewed_at, not_before=renewed_at, not_after=new_not_after) is None
    assert decide(new_not_after - 29 * D, not_before=renewed_at, not_after=new_not_after) == ReminderDecision(30, (30,))


@pytest.mark.parametrize(
    ("lifetime", "left", "expected"),
    [
        # thresholds at or beyond the whole lifetime were crossed at issuance: recorded, not sent
        (7 * D, 7 * D, ReminderDecision(None, (7, 14, 30))),
        (20 * D, 20 * D, ReminderDecision(None, (30,))),
        (20 * D, 14 * D, ReminderDecision(14, (14, 30))),
        (7 * D, 23 * H, ReminderDecision(1, (1, 7, 14, 30))),
        (12 * H, 12 * H, ReminderDecision(None, (1, 7, 14, 30))),
    ],
)
def test_short_lived_certificates_are_not_reminded_on_arrival(lifetime, left, expected):
    not_after = NOT_AFTER
    assert decide(not_after - left, not_before=not_after - lifetime, not_after=not_after) == expected


@pytest.mark.parametrize(
    ("not_after", "now", "due"),
    [
        # leap day inside the window: 30 days before 2028-03-01 is 2028-01-31, not 2028-01-30
        (datetime(2028, 3, 1, tzinfo=UTC), datetime(2028, 1, 31, tzinfo=UTC), [30]),
        (datetime(2028, 3, 1, tzinfo=UTC), datetime(2028, 1, 30, 23, 59, 59, tzinfo=UTC), []),
        # expiring on the leap day itself
        (datetime(2028, 2, 29, 9, tzinfo=UTC), datetime(2028, 2, 22, 9, tzinfo=UTC), [7, 14, 30]),
        (datetime(2028, 2, 29, 9, tzinfo=UTC), datetime(2028, 2, 28, 9, 0, 1, tzinfo=UTC), [1, 7, 14, 30]),
        # no leap day in 2027: 30 days before 2027-03-01 is 2027-01-30
        (datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 1, 30, tzinfo=UTC), [30]),
        (datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 1, 29, 23, 59, tzinfo=UTC), []),
    ],
)
def test_leap_days_count_as_days(not_after, now, due):
    assert due_thresholds(not_after=not_after, now=now, thresholds=T, recorded=set()) == due


TOKYO = timezone(timedelta(hours=9))
NEW_YORK = timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    ("not_after", "now", "due"),
    [
        # the same instants written in different zones decide the same way
        (NOT_AFTER, NOT_AFTER.astimezone(TOKYO) - 7 * D, [7, 14, 30]),
        (NOT_AFTER.astimezone(NEW_YORK), NOT_AFTER - 7 * D, [7, 14, 30]),
        (NOT_AFTER.astimezone(TOKYO), (NOT_AFTER - 7 * D - S).astimezone(NEW_YORK), [14, 30]),
        # wall-clock times 6 days 21 hours apart are 7 days 2 hours apart once offsets apply
        (datetime(2027, 7, 8, 2, 0, tzinfo=NEW_YORK), datetime(2027, 7, 1, 5, 0, tzinfo=UTC), [14, 30]),
        (datetime(2027, 7, 8, 2, 0, tzinfo=NEW_YORK), datetime(2027, 7, 1, 7, 0, tzinfo=UTC), [7, 14, 30]),
    ],
)
def test_time_zones_do_not_move_windows(not_after, now, due):
    assert due_thresholds(not_after=not_after, now=now, thresholds=T, recorded=set()) == due


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        decide(datetime(2027, 6, 1))


def test_one_pass_a_day_through_a_whole_lifetime_sends_each_threshold_once():
    recorded: set[int] = set()
    sent: list[int] = []
    now = ISSUED
    while now < NOT_AFTER + 3 * D:
        decision = decide(now, recorded=recorded)
        if decision is not None:
            recorded.update(decision.record)
            if decision.send is not None:
                sent.append(decision.send)
        now += D
    assert sent == [30, 14, 7, 1]


def test_a_gap_in_passes_sends_one_catch_up_reminder_not_a_burst():
    recorded: set[int] = set()
    sent: list[int] = []
    for now in (NOT_AFTER - 40 * D, NOT_AFTER - 3 * D, NOT_AFTER - 3 * D + H, NOT_AFTER - 12 * H):
        decision = decide(now, recorded=recorded)
        if decision is not None:
            recorded.update(decision.record)
            sent += [decision.send] if decision.send is not None else []
    assert sent == [7, 1]
    assert recorded == {30, 14, 7, 1}


@pytest.mark.parametrize(
    ("days", "status", "left", "pending", "attempted", "expected"),
    [
        (None, "active", 5 * D, False, False, False),  # off by default
        (14, "active", 15 * D, False, False, False),
        (14, "active", 14 * D, False, False, True),
        (14, "active", 2 * H, False, False, True),
        (14, "active", timedelta(0), False, False, False),  # expired: a new request, not a renewal
        (14, "active", 5 * D, True, False, False),  # a renewal is already open
        (14, "active", 5 * D, False, True, False),  # tried once; not again every pass
        (14, "superseded", 5 * D, False, False, False),
        (14, "revoked", 5 * D, False, False, False),
        (14, "expired", 5 * D, False, False, False),
    ],
)
def test_should_auto_renew(days, status, left, pending, attempted, expected):
    assert (
        should_auto_renew(
            status=status,
            not_after=NOT_AFTER,
            now=NOT_AFTER - left,
            auto_renew_days=days,
            renewal_pending=pending,
            renewal_attempted=attempted,
        )
        is expected
    )


@pytest.mark.parametrize(
    ("policy", "status", "left", "expected"),
    [
        (True, "active", 10 * D, True),
        (True, "active", S, True),
        (True, "active", timedelta(0), False),  # expired: an approver decides
        (True, "superseded", 10 * D, False),
        (True, "revoked", 10 * D, False),
        (True, None, None, False),  # nothing to renew
        (False, "active", 10 * D, False),
    ],
)
def test_renewal_auto_approval(policy, status, left, expected):
    not_after = None if left is None else NOT_AFTER
    now = NOT_AFTER - (left or timedelta(0))
    assert auto_approvable(policy_allows=policy, status=status, not_after=not_after, now=now) is expected


@pytest.mark.parametrize(
    ("state", "deadline", "expected"),
    [
        ("pending_approval", NOT_AFTER, True),
        ("pending_approval", NOT_AFTER + S, False),
        ("pending_approval", NOT_AFTER - D, True),
        ("pending_approval", None, False),
        ("approved", NOT_AFTER - D, False),
        ("denied", NOT_AFTER - D, False),
        ("pending_approval", (NOT_AFTER - S).astimezone(TOKYO), True),
    ],
)
def test_pending_request_expiry(state, deadline, expected):
    assert request_expired(state=state, expires_at=deadline, now=NOT_AFTER) is expected


@pytest.mark.parametrize(
    ("validity", "age", "interval", "expected"),
    [
        (168 * H, 1 * H, 300, False),
        (168 * H, 84 * H, 300, True),  # half its validity gone
        (168 * H, 83 * H, 300, False),
        (2 * H, 50 * 60 * S, 3600, True),  # the next pass would come too close to nextUpdate
        (2 * H, 10 * 60 * S, 300, False),
        (168 * H, 200 * H, 300, True),  # already stale
    ],
)
def test_crl_refresh(validity, age, interval, expected):
    last = NOT_AFTER
    assert (
        crl_refresh_due(last_update=last, next_update=last + validity, now=last + age, interval_seconds=interval)
        is expected
    )
    assert crl_refresh_due(last_update=last, next_update=None, now=last, interval_seconds=interval)


@pytest.mark.parametrize(
    ("left", "words"),
    [
        (7 * D, "(in 7 days)"),
        (7 * D - 5 * 60 * S, "(in 7 days)"),
        (D + H, "(in 1 day)"),
        (23 * H, "(in less than a day)"),
        (timedelta(0), "(already expired)"),
    ],
)
def test_expiry_is_described_in_plain_words(left, words):
    text = describe_expiry(NOT_AFTER, NOT_AFTER - left)
    assert text.startswith("on 2027-06-30 at 12:00 UTC ")
    assert text.endswith(words)
    assert is_expired(NOT_AFTER, NOT_AFTER - left) is (left <= timedelta(0))
