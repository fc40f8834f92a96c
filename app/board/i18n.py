"""The board's words: Chinese by default (the rooms' working language), English on request
(`lang=en`). One table; a key missing in one language is a test failure, not a blank label."""

from __future__ import annotations

from enum import StrEnum

from app.projections.periods import Period, PeriodKind


class Lang(StrEnum):
    zh = "zh"
    en = "en"


LABELS: dict[str, dict[str, str]] = {
    "title": {"zh": "助企问题调度 · 挂图作战", "en": "Enterprise problems · wall board"},
    "city": {"zh": "全市", "en": "Whole city"},
    "period": {"zh": "统计期：", "en": "Period: "},
    "as_of": {"zh": "截至", "en": "As of"},
    "live": {"zh": "实时", "en": "Live"},
    "offline": {"zh": "连接中断，重连中", "en": "Reconnecting"},
    "updated": {"zh": "更新于", "en": "Updated"},
    "switch_lang": {"zh": "English", "en": "中文"},
    "headline": {"zh": "本期核心指标", "en": "Headline figures"},
    "headline_note": {
        "zh": "本期收集的问题；较上期（上期截至期末）",
        "en": "Problems received in the period; change against the previous period (as at its end)",
    },
    "received": {"zh": "收集问题", "en": "Received"},
    "solved": {"zh": "已解决", "en": "Solved"},
    "solve_rate": {"zh": "解决率", "en": "Solve rate"},
    "solved_on_the_spot": {"zh": "现场解决", "en": "On the spot"},
    "on_time_rate": {"zh": "按时办结率", "en": "On-time rate"},
    "satisfaction_rate": {"zh": "满意率", "en": "Satisfaction"},
    "open": {"zh": "在办", "en": "Open"},
    "overdue": {"zh": "超期", "en": "Overdue"},
    "vs_previous": {"zh": "较上期", "en": "vs previous"},
    "no_previous": {"zh": "上期无数据", "en": "no previous data"},
    "flow": {"zh": "层级流转", "en": "Flow between tiers"},
    "flow_note": {"zh": "本期内：上交与解决（件）", "en": "escalated and solved in the period"},
    "tier_local": {"zh": "基层服务队（组）", "en": "Local service teams"},
    "tier_district": {"zh": "区调度室", "en": "District dispatch room"},
    "tier_city": {"zh": "市总调度室", "en": "City command room"},
    "flow_local": {"zh": "基层", "en": "Local"},
    "flow_district": {"zh": "区调度室", "en": "District"},
    "flow_city": {"zh": "市总调度室", "en": "City"},
    "flow_received": {"zh": "新收集", "en": "New"},
    "flow_solved": {"zh": "解决", "en": "Solved"},
    "flow_escalated": {"zh": "上交", "en": "Up"},
    "from": {"zh": "从", "en": "From"},
    "to": {"zh": "到", "en": "To"},
    "count": {"zh": "件数", "en": "Count"},
    "tier": {"zh": "层级", "en": "Tier"},
    "districts": {"zh": "各区解决率", "en": "Solve rate by district"},
    "units": {"zh": "单位解决率", "en": "Solve rate by unit"},
    "target": {"zh": "目标", "en": "Target"},
    "district": {"zh": "区", "en": "District"},
    "unit": {"zh": "单位", "en": "Unit"},
    "rank": {"zh": "排名", "en": "Rank"},
    "more_units": {"zh": "其余 {n} 个单位见数据表", "en": "{n} more units in the table"},
    "aging": {"zh": "在办问题时长分布", "en": "Aging of open problems"},
    "aging_calendar": {"zh": "自然日", "en": "calendar days"},
    "aging_working": {"zh": "工作日", "en": "working days"},
    "days": {"zh": "天", "en": "days"},
    "age": {"zh": "时长", "en": "Age"},
    "problems": {"zh": "问题数", "en": "Problems"},
    "of_which_overdue": {"zh": "其中超期", "en": "of which overdue"},
    "overdue_list": {"zh": "超期问题（最久在前）", "en": "Overdue problems, oldest first"},
    "overdue_all": {"zh": "全部超期", "en": "all overdue"},
    "none_overdue": {"zh": "无超期问题", "en": "Nothing overdue"},
    "enterprise": {"zh": "企业", "en": "Enterprise"},
    "category": {"zh": "类别", "en": "Category"},
    "holder": {"zh": "承办单位", "en": "Holder"},
    "days_overdue": {"zh": "超期天数", "en": "Days late"},
    "rankings": {"zh": "单位排名与预警", "en": "Rankings and warnings"},
    "score": {"zh": "得分", "en": "Score"},
    "progress": {"zh": "进度", "en": "Progress"},
    "warning": {"zh": "预警", "en": "Warning"},
    "ahead": {"zh": "领先", "en": "Ahead"},
    "normal": {"zh": "正常", "en": "Normal"},
    "lagging": {"zh": "滞后", "en": "Lagging"},
    "no_progress": {"zh": "无进展", "en": "No progress"},
    "yellow": {"zh": "黄牌", "en": "Yellow"},
    "red": {"zh": "红牌", "en": "Red"},
    "evidence": {"zh": "依据", "en": "Evidence"},
    "evidence_line": {
        "zh": "{label}：第 {rank}/{ranked} 名，{score}（目标 {target}），"
        "收集 {received} 件，解决 {solved} 件",
        "en": "{label}: rank {rank} of {ranked}, {score} (target {target}), "
        "{received} received, {solved} solved",
    },
    "no_units": {"zh": "本期暂无可排名单位", "en": "No units to rank in this period"},
    "data_table": {"zh": "数据表：", "en": "Data table: "},
    "chart": {"zh": "图", "en": "Chart"},
    "nothing": {"zh": "暂无数据", "en": "No data"},
    "problem": {"zh": "问题详情", "en": "Problem"},
    "back": {"zh": "返回挂图", "en": "Back to the board"},
    "timeline": {"zh": "办理过程", "en": "Timeline"},
    "when": {"zh": "时间", "en": "When"},
    "who": {"zh": "办理人", "en": "Who"},
    "what": {"zh": "事项", "en": "What"},
    "details": {"zh": "说明", "en": "Details"},
    "deadlines": {"zh": "办理时限变化", "en": "Deadline history"},
    "deadline": {"zh": "办结时限", "en": "Deadline"},
    "previous_deadline": {"zh": "原时限", "en": "Previous deadline"},
    "status": {"zh": "状态", "en": "Status"},
    "submitted_at": {"zh": "提交时间", "en": "Submitted"},
    "age_days": {"zh": "已历时（自然日）", "en": "Age (calendar days)"},
    "age_working_days": {"zh": "已历时（工作日）", "en": "Age (working days)"},
    "tier_age_days": {"zh": "本层级已历时（天）", "en": "Days at this tier"},
    "is_overdue": {"zh": "已超期", "en": "Overdue"},
    "not_overdue": {"zh": "未超期", "en": "Not overdue"},
    "no_deadline": {"zh": "无", "en": "none"},
    "system": {"zh": "系统自动", "en": "System (automatic)"},
    "open_title": {"zh": "打开挂图", "en": "Open the wall board"},
    "open_intro": {
        "zh": "请使用管理员发放的挂图链接打开本页；也可输入查看、调度或指挥密钥。",
        "en": "Open this page with the board link an administrator issued, or enter a viewer, "
        "dispatcher or commander key.",
    },
    "key": {"zh": "密钥", "en": "Key"},
    "open_button": {"zh": "进入挂图", "en": "Open the board"},
    "opening": {"zh": "正在进入挂图…", "en": "Opening the board…"},
    "open_failed": {"zh": "链接无效或已撤销", "en": "The link is invalid or revoked"},
    "scope": {"zh": "范围", "en": "Scope"},
}

STATUS = {
    "open": {"zh": "待交办", "en": "Open"},
    "assigned": {"zh": "已交办", "en": "Assigned"},
    "in_progress": {"zh": "办理中", "en": "In progress"},
    "deferred": {"zh": "缓办", "en": "Deferred"},
    "resolved": {"zh": "已办结", "en": "Resolved"},
    "closed": {"zh": "已销号", "en": "Closed"},
    "withdrawn": {"zh": "已撤回", "en": "Withdrawn"},
}

EVENTS = {
    "problem.submitted": {"zh": "问题录入", "en": "Submitted"},
    "problem.accepted": {"zh": "签收", "en": "Accepted"},
    "problem.escalated": {"zh": "上交", "en": "Escalated"},
    "problem.assigned": {"zh": "交办", "en": "Assigned"},
    "problem.return_requested": {"zh": "申请退回", "en": "Return requested"},
    "problem.returned": {"zh": "退回", "en": "Returned"},
    "problem.return_refused": {"zh": "退回未同意", "en": "Return refused"},
    "problem.progress_reported": {"zh": "进展", "en": "Progress"},
    "problem.extension_requested": {"zh": "申请延期", "en": "Extension requested"},
    "problem.extension_decided": {"zh": "延期审批", "en": "Extension decided"},
    "problem.deferred": {"zh": "缓办", "en": "Deferred"},
    "problem.resumed": {"zh": "恢复办理", "en": "Resumed"},
    "problem.resolved": {"zh": "办结", "en": "Resolved"},
    "problem.feedback_received": {"zh": "回访", "en": "Feedback"},
    "problem.reopened": {"zh": "重新办理", "en": "Reopened"},
    "problem.supervised": {"zh": "督办", "en": "Supervised"},
    "problem.reminded": {"zh": "催办", "en": "Reminded"},
    "problem.overdue": {"zh": "超期", "en": "Overdue"},
    "problem.withdrawn": {"zh": "撤回", "en": "Withdrawn"},
    "problem.closed": {"zh": "销号", "en": "Closed"},
}

ROLES = {
    "admin": {"zh": "管理员", "en": "Admin"},
    "commander": {"zh": "市总调度室", "en": "Command room"},
    "dispatcher": {"zh": "区调度室", "en": "Dispatch room"},
    "handler": {"zh": "承办单位", "en": "Handler"},
    "portal": {"zh": "平台", "en": "Portal"},
    "viewer": {"zh": "查看", "en": "Viewer"},
    "system": {"zh": "系统", "en": "System"},
}

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def period_label(period: Period, lang: Lang) -> str:
    if lang is Lang.zh:
        return period.label
    match period.kind:
        case PeriodKind.year:
            return str(period.year)
        case PeriodKind.half:
            return f"H{period.number} {period.year}"
        case PeriodKind.quarter:
            return f"Q{period.number} {period.year}"
        case PeriodKind.month:
            return f"{_MONTHS[period.number - 1]} {period.year}"
        case PeriodKind.dekad:
            return f"{_MONTHS[period.number - 1]} {period.year}, days {_DEKAD_DAYS[period.dekad]}"


_DEKAD_DAYS = {1: "1–10", 2: "11–20", 3: "21–end"}


class Words:
    """`words.received` or `words("more_units", n=3)`: a label in the chosen language; and the
    labels of statuses, event types and roles."""

    def __init__(self, lang: Lang) -> None:
        self.lang = lang

    def __getattr__(self, name: str) -> str:
        try:
            return LABELS[name][self.lang.value]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> str:
        return LABELS[name][self.lang.value]

    def __call__(self, name: str, **values: object) -> str:
        return LABELS[name][self.lang.value].format(**values)

    def status(self, value: str | None) -> str:
        return STATUS.get(value or "", {}).get(self.lang.value, value or "")

    def event(self, value: str) -> str:
        return EVENTS.get(value, {}).get(self.lang.value, value)

    def role(self, value: str | None) -> str:
        return ROLES.get(value or "", {}).get(self.lang.value, value or "")

    def tier(self, value: str | None) -> str:
        return LABELS.get(f"tier_{value}", {}).get(self.lang.value, value or "")
