"""The problem decider: every transition of SPEC §3, the refusals, and who may do what."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from app.core.errors import AppError
from app.problems import domain
from app.problems.domain import Status
from app.routing.tree import Tier
from tests.problems.world import (
    ADMIN,
    COMMANDER,
    DEPT,
    DISPATCHER,
    FG1,
    FG2,
    GROUP,
    OTHER_DISPATCHER,
    OTHER_PORTAL,
    PORTAL,
    T0,
    TEAM,
    TZ,
    VIEWER,
    Story,
    ctx,
    new_problem,
)


def refused(story: Story, actor: domain.Actor, command: domain.Command) -> AppError:
    with pytest.raises(AppError) as info:
        domain.decide(story.state, command, ctx(actor, story.at + timedelta(minutes=1)))
    return info.value


def local_time(value: datetime | None) -> str:
    assert value is not None
    return value.astimezone(TZ).isoformat()


def test_a_submitted_problem_starts_local_with_the_service_group() -> None:
    state = new_problem()
    assert (state.tier, state.status, state.lead_unit_id, state.holder_unit_id) == (
        Tier.local,
        Status.assigned,
        "g1",
        "g1",
    )
    assert state.version == 1
    # Submitted Monday 16 Nov: 3 working days → end of Thursday 19 Nov.
    assert local_time(state.deadline) == "2026-11-19T23:59:59+08:00"
    assert state.reporter_unit_id == "g1"


def test_urgent_halves_the_deadline() -> None:
    state = new_problem(urgency="urgent")
    assert local_time(state.deadline) == "2026-11-18T23:59:59+08:00"  # ceil(3 / 2) = 2 working days


def test_solved_on_the_spot_path() -> None:
    s = Story()
    assert s.do(GROUP, domain.Accept()).status is Status.in_progress
    resolved = s.do(GROUP, domain.Resolve("现场解决"))
    assert (resolved.status, resolved.solved_tier, resolved.escalations) == (
        Status.resolved,
        Tier.local,
        0,
    )
    closed = s.do(PORTAL, domain.Feedback(5, "满意"))
    assert closed.status is Status.closed and closed.satisfied is True
    assert [f.type for f in s.facts][-2:] == [domain.FEEDBACK_RECEIVED, domain.CLOSED]


def test_escalate_to_the_district_room_then_assign_with_the_rule_proposal() -> None:
    s = Story()
    state = s.do(GROUP, domain.Escalate("跨部门"))
    assert (
        state.tier,
        state.status,
        state.room_unit_id,
        state.holder_unit_id,
        state.lead_unit_id,
    ) == (Tier.district, Status.open, "r1", "r1", None)
    # District deadline: 10 working days after Monday 16 Nov → Monday 30 Nov.
    assert local_time(state.deadline) == "2026-11-30T23:59:59+08:00"
    assigned = s.do(DISPATCHER, domain.Assign())
    assert (
        assigned.status,
        assigned.lead_unit_id,
        assigned.cooperating_unit_ids,
        assigned.rule_version,
    ) == (Status.assigned, "fg1", ("fg2",), 3)
    assert assigned.deadline == state.deadline, "the tier's deadline stays when none is given"
    assert s.do(FG1, domain.Accept()).status is Status.in_progress


def test_a_room_can_override_the_proposal_and_reassign() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    deadline = T0 + timedelta(days=20)
    state = s.do(
        DISPATCHER,
        domain.Assign(lead_unit_id="fg2", cooperating_unit_ids=("fg1", "fg2"), deadline=deadline),
    )
    assert (state.lead_unit_id, state.cooperating_unit_ids, state.deadline, state.rule_version) == (
        "fg2",
        ("fg1",),
        deadline,
        3,
    )
    assert s.facts[-1].data["proposed"] is False, "the rule version in force is recorded, not proposed"
    s.do(FG2, domain.Accept())
    again = s.do(DISPATCHER, domain.Assign(lead_unit_id="fg1"))
    assert (again.status, again.lead_unit_id, again.accepted_at) == (Status.assigned, "fg1", None)


def test_city_jurisdiction_skips_the_district() -> None:
    s = Story(new_problem(category="demolition"))
    state = s.do(GROUP, domain.Escalate("征地拆迁属市级"))
    assert (state.tier, state.room_unit_id) == (Tier.city, "cc")
    assigned = s.do(COMMANDER, domain.Assign(lead_unit_id="cc-d1"))
    assert assigned.holder_unit_id == "cc-d1"
    assert s.do(DEPT, domain.Accept()).status is Status.in_progress


def test_district_to_city_even_straight_from_open() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    state = s.do(DISPATCHER, domain.Escalate("超出区级权限"))
    assert (state.tier, state.status, state.room_unit_id, state.escalations) == (
        Tier.city,
        Status.open,
        "cc",
        2,
    )
    # 20 working days for the city tier.
    assert state.deadline is not None and state.deadline > T0 + timedelta(days=25)
    error = refused(s, COMMANDER, domain.Escalate("再上交"))
    assert error.code == "already_at_top_tier" and error.status == 409


def test_return_request_and_the_rooms_ruling() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    first_deadline = s.state.deadline
    s.do(DISPATCHER, domain.Assign(lead_unit_id="fg2"))
    requested = s.do(FG2, domain.Return("不属于本组职责"))
    assert requested.status is Status.assigned and requested.return_request is not None
    assert refused(s, FG2, domain.Return("again")).code == "return_pending"
    refused_state = s.do(DISPATCHER, domain.DecideReturn(accept=False, note="属于你组"))
    assert (refused_state.lead_unit_id, refused_state.return_request) == ("fg2", None)
    s.do(FG2, domain.Return("确实不属于"))
    back = s.do(DISPATCHER, domain.DecideReturn(accept=True))
    assert (back.status, back.lead_unit_id, back.holder_unit_id, back.returns) == (
        Status.open,
        None,
        "r1",
        1,
    )
    assert back.deadline == first_deadline, "the deadline clock does not restart on a return"
    assert refused(s, DISPATCHER, domain.DecideReturn(accept=True)).code == "no_return_pending"


def test_no_deferral_while_a_return_waits_for_the_room() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    s.do(DISPATCHER, domain.Assign(lead_unit_id="fg2"))
    s.do(FG2, domain.Return("不属于本组职责"))
    error = refused(s, FG2, domain.Defer("待定", (), date(2026, 12, 21)))
    assert error.code == "return_pending"
    back = s.do(DISPATCHER, domain.DecideReturn(accept=True))
    assert (back.status, back.review_on, back.deferred_at) == (Status.open, None, None)


def test_return_only_within_the_window() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    s.do(DISPATCHER, domain.Assign(lead_unit_id="fg2"))
    s.at += timedelta(days=3)  # past the 1-working-day window
    assert refused(s, FG2, domain.Return("late")).code == "return_window_closed"


def test_extension_requested_and_approved_moves_the_deadline() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    s.do(DISPATCHER, domain.Assign())
    s.do(FG1, domain.Accept())
    wanted = s.state.deadline + timedelta(days=7)  # type: ignore[operator]
    s.do(FG1, domain.RequestExtension(wanted, "需要补充材料"))
    assert refused(s, FG1, domain.RequestExtension(wanted, "again")).code == "extension_pending"
    approved = s.do(DISPATCHER, domain.DecideExtension(approve=True))
    assert approved.deadline == wanted and approved.extension_request is None
    assert refused(s, DISPATCHER, domain.DecideExtension(approve=True)).code == "no_extension_pending"


def test_extension_refused_keeps_the_deadline_and_late_requests_are_refused() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    s.do(DISPATCHER, domain.Assign())
    deadline = s.state.deadline
    assert deadline is not None
    assert (
        refused(s, FG1, domain.RequestExtension(deadline - timedelta(days=1), "earlier")).code
        == "invalid_deadline"
    )
    s.do(FG1, domain.RequestExtension(deadline + timedelta(days=3), "r"))
    assert s.do(DISPATCHER, domain.DecideExtension(approve=False)).deadline == deadline
    s.at = deadline + timedelta(hours=1)
    assert (
        refused(s, FG1, domain.RequestExtension(deadline + timedelta(days=9), "late")).code
        == "deadline_passed"
    )


def test_defer_pauses_the_clock_and_resume_gives_the_days_back() -> None:
    s = Story()
    s.do(GROUP, domain.Escalate("x"))
    s.do(DISPATCHER, domain.Assign())
    s.do(FG1, domain.Accept())
    review = date(2026, 12, 21)
    deferred = s.do(FG1, domain.Defer("待指标下达", (domain.PlanStep("申报", date(2026, 12, 10)),), review))
    assert deferred.status is Status.deferred and deferred.review_on == review
    assert deferred.deadline is not None and deferred.deadline.astimezone(TZ).date() > review
    assert not deferred.is_overdue(datetime(2026, 12, 20, tzinfo=TZ)), "not overdue before the review date"
    remaining = deferred.deferred_remaining
    resumed = s.do(FG1, domain.Resume(), after=timedelta(days=14))
    assert resumed.status is Status.in_progress and resumed.paused_seconds == 14 * 86400
    assert remaining is not None
    expected = s.state.deadline
    assert expected == POLICY_DEADLINE(s.at, remaining)
    assert refused(s, FG1, domain.Defer("x", (), date(2026, 1, 1))).code == "invalid_review_date"


def POLICY_DEADLINE(at: datetime, days: int) -> datetime:
    from tests.problems.world import POLICY

    return POLICY.add_working_days(at, days)


def test_unsatisfied_feedback_reopens() -> None:
    s = Story()
    s.do(GROUP, domain.Accept())
    s.do(GROUP, domain.Resolve("done"))
    state = s.do(PORTAL, domain.Feedback(2, "没解决"))
    assert (state.status, state.satisfied, state.resolved_at, state.reopens) == (
        Status.in_progress,
        False,
        None,
        1,
    )
    assert [f.type for f in s.facts][-2:] == [domain.FEEDBACK_RECEIVED, domain.REOPENED]


def test_reopen_supervise_withdraw_close() -> None:
    s = Story()
    s.do(GROUP, domain.Resolve("done"))
    assert s.do(DISPATCHER, domain.Reopen("企业投诉")).status is Status.in_progress
    assert s.do(DISPATCHER, domain.Supervise("请加快办理")).supervisions == 1
    s.do(GROUP, domain.Resolve("done again"))
    assert s.do(ADMIN, domain.Close("no feedback")).status is Status.closed
    s2 = Story()
    assert s2.do(PORTAL, domain.Withdraw("企业自行解决")).status is Status.withdrawn
    assert refused(s2, ADMIN, domain.Withdraw("again")).code == "invalid_transition"


@pytest.mark.parametrize(
    ("setup", "actor", "command", "code"),
    [
        ([], GROUP, domain.Resolve("x"), None),
        ([(GROUP, domain.Accept())], GROUP, domain.Accept(), "invalid_transition"),
        ([], DISPATCHER, domain.Assign(lead_unit_id="fg1"), "invalid_transition"),
        ([], GROUP, domain.Return("x"), "invalid_transition"),
        ([], PORTAL, domain.Feedback(5), "invalid_transition"),
        ([], ADMIN, domain.Reopen("x"), "invalid_transition"),
        ([], ADMIN, domain.DecideExtension(approve=True), "no_extension_pending"),
        ([(GROUP, domain.Escalate("x"))], DISPATCHER, domain.Accept(), "not_permitted"),
        (
            [(GROUP, domain.Escalate("x"))],
            DISPATCHER,
            domain.Assign(lead_unit_id="g1"),
            "invalid_lead_unit",
        ),
        (
            [(GROUP, domain.Escalate("x"))],
            DISPATCHER,
            domain.Assign(lead_unit_id="fg9"),
            "invalid_lead_unit",
        ),
        (
            [(GROUP, domain.Escalate("x"))],
            DISPATCHER,
            domain.Assign(lead_unit_id="nope"),
            "invalid_lead_unit",
        ),
        (
            [(GROUP, domain.Escalate("x"))],
            DISPATCHER,
            domain.Assign(lead_unit_id="fg1", deadline=T0 - timedelta(days=1)),
            "invalid_deadline",
        ),
        ([(GROUP, domain.Resolve("x"))], GROUP, domain.Progress("x"), "invalid_transition"),
        ([(GROUP, domain.Withdraw("x"))], ADMIN, domain.Resolve("x"), "invalid_transition"),
    ],
)
def test_refusals_carry_stable_codes(
    setup: list, actor: domain.Actor, command: domain.Command, code: str | None
) -> None:
    s = Story()
    for who, cmd in setup:
        s.do(who, cmd)
    if code is None:
        s.do(actor, command)
        return
    error = refused(s, actor, command)
    assert error.code == code
    assert error.status in (403, 409, 422)
    if code == "invalid_transition":
        assert error.extra["current_status"] == s.state.status.value
        assert "allowed_statuses" in error.extra


def test_assign_without_a_rule_needs_a_lead_unit() -> None:
    s = Story(new_problem(category="financing"))
    s.do(GROUP, domain.Escalate("x"))
    assert refused(s, DISPATCHER, domain.Assign()).code == "lead_unit_required"


@pytest.mark.parametrize(
    ("actor", "command"),
    [
        (OTHER_DISPATCHER, domain.Supervise("x")),
        (FG1, domain.Accept()),  # not the lead at the local tier
        (VIEWER, domain.Progress("x")),
        (OTHER_PORTAL, domain.Withdraw("x")),
        (PORTAL, domain.Resolve("x")),
        (GROUP, domain.Close("x")),
        (ADMIN, domain.Remind("x")),  # automatic only
    ],
)
def test_rights_are_checked(actor: domain.Actor, command: domain.Command) -> None:
    assert refused(Story(), actor, command).code == "not_permitted"


def test_visibility_follows_scope() -> None:
    s = Story()
    state = s.state
    assert domain.can_see(state, GROUP) and domain.can_see(state, TEAM)
    assert domain.can_see(state, DISPATCHER) and not domain.can_see(state, OTHER_DISPATCHER)
    assert domain.can_see(state, PORTAL) and not domain.can_see(state, OTHER_PORTAL)
    assert not domain.can_see(state, FG1) and domain.can_see(state, COMMANDER)
    s.do(GROUP, domain.Escalate("x"))
    s.do(DISPATCHER, domain.Assign())
    assert domain.can_see(s.state, FG1) and domain.can_see(s.state, FG2), "lead and cooperator see it"
    assert domain.can_see(s.state, GROUP), "who finds it follows it"


def test_commands_never_land_before_the_latest_event() -> None:
    s = Story()
    with pytest.raises(AppError) as info:
        domain.decide(s.state, domain.Accept(), ctx(GROUP, T0 - timedelta(minutes=1)))
    assert info.value.code == "occurred_at_out_of_order"


def test_marking_overdue_happens_once_per_deadline() -> None:
    s = Story()
    assert s.state.deadline is not None
    s.at = s.state.deadline + timedelta(minutes=5)
    from app.problems.domain import SYSTEM_ACTOR

    state = s.do(SYSTEM_ACTOR, domain.MarkOverdue(), after=timedelta(0))
    assert state.overdue_noted_for == state.deadline
    assert refused(s, SYSTEM_ACTOR, domain.MarkOverdue()).code == "invalid_transition"


def test_status_notes_tell_the_enterprise_where_its_problem_stands() -> None:
    s = Story()
    assert s.state.status_note == "已受理，限 2026-11-19 前办结"
    s.do(GROUP, domain.Escalate("x"))
    assert s.state.status_note == "已提交区调度室协调，限 2026-11-30 前办结"
    s.do(DISPATCHER, domain.Assign())
    s.do(FG1, domain.Accept())
    assert s.state.status_note == "已交牵头单位办理，限 2026-11-30 前办结", "accepting tells nothing new"
    wanted = datetime(2026, 12, 11, 23, 59, 59, tzinfo=TZ)
    s.do(FG1, domain.RequestExtension(wanted, "需要补充材料"))
    s.do(DISPATCHER, domain.DecideExtension(approve=False))
    assert s.state.status_note == "已交牵头单位办理，限 2026-11-30 前办结", "a refusal changes nothing"
    s.do(FG1, domain.RequestExtension(wanted, "需要补充材料"))
    s.do(DISPATCHER, domain.DecideExtension(approve=True))
    assert s.state.status_note == "经批准延期（需要补充材料），限 2026-12-11 前办结"
    plan = (domain.PlanStep("申报", date(2026, 12, 10)),)
    s.do(FG1, domain.Defer("待指标下达", plan, date(2026, 12, 21)))
    assert s.state.status_note == "暂缓办理：待指标下达（已制定阶段计划，2026-12-21 复核）"
    s.do(FG1, domain.Resolve("已协调解决"))
    assert s.state.status_note == "已办结：已协调解决"
    s.do(PORTAL, domain.Feedback(5))
    assert s.state.status_note == "已销号"
