"""The ledger's columns (台账字段). Import and export use the same columns, so an exported
ledger imports again. Headers are matched by their Chinese title or by the key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    note: str


COLUMNS: tuple[Column, ...] = (
    Column("ledger_id", "台账编号", "Required. The row's id; the same id imports as the same problem."),
    Column("enterprise_id", "企业统一社会信用代码", "Required. The enterprise must be registered."),
    Column("enterprise_name", "企业名称", "Informational."),
    Column("category", "问题类别", "Required. A category code or name."),
    Column("title", "问题标题", "Required."),
    Column("description", "问题描述", "Default: the title."),
    Column("urgency", "紧急程度", "一般/紧急 (normal/urgent)."),
    Column("source", "来源", "The portal or channel."),
    Column("reported_by", "填报人", "Who recorded it."),
    Column("reporter_unit_id", "发现单位", "A local unit (id or name); default the service group."),
    Column("address", "问题地址", "Where the problem is."),
    Column("submitted_at", "提交时间", "Required."),
    Column("escalated_at", "上交时间", "First escalation."),
    Column("escalated_again_at", "再次上交时间", "Second escalation (to the city)."),
    Column("assigned_at", "交办时间", "Assignment by a room (with 牵头单位)."),
    Column("lead_unit_id", "牵头单位", "Id or name."),
    Column("cooperating_unit_ids", "配合单位", "Ids or names, separated by 、 , or ;."),
    Column("deadline", "办结时限", "The deadline of the assignment (default: the tier's)."),
    Column("accepted_at", "签收时间", "The lead unit accepted it."),
    Column("resolved_at", "办结时间", "Resolved."),
    Column("resolution", "办理结果", "Default: 已办结."),
    Column("feedback_at", "回访时间", "The enterprise's feedback (with 满意度评分)."),
    Column("score", "满意度评分", "1–5; 4 and 5 close the problem."),
    Column("comment", "回访意见", "The enterprise's comment."),
    Column("closed_at", "销号时间", "Closed (without feedback: closed by an admin)."),
    Column("withdrawn_at", "撤回时间", "Withdrawn."),
    Column("withdraw_reason", "撤回原因", "Default: 台账导入."),
    Column("tier", "当前层级", "Export only (informational)."),
    Column("status", "当前状态", "Export only (informational)."),
)
TITLES = {c.title: c.key for c in COLUMNS} | {c.key: c.key for c in COLUMNS}
REQUIRED = ("ledger_id", "enterprise_id", "category", "title", "submitted_at")
DATE_KEYS = (
    "submitted_at",
    "escalated_at",
    "escalated_again_at",
    "assigned_at",
    "deadline",
    "accepted_at",
    "resolved_at",
    "feedback_at",
    "closed_at",
    "withdrawn_at",
)
TIER_TITLES = {"local": "服务组", "district": "区级", "city": "市级"}
STATUS_TITLES = {
    "open": "待交办",
    "assigned": "已交办",
    "in_progress": "办理中",
    "deferred": "暂缓办理",
    "resolved": "已办结",
    "closed": "已销号",
    "withdrawn": "已撤回",
}
URGENCY = {"一般": "normal", "紧急": "urgent", "normal": "normal", "urgent": "urgent", "": "normal"}
URGENCY_TITLES = {"normal": "一般", "urgent": "紧急"}
