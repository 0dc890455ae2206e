"""The triage demo's agents, called directly, and its workflow spec, checked statically.

No engine is involved: the agents are plain functions (an ``AgentDef`` is
callable), and the last test walks the compiled workflow with covey's own
expression evaluator to check that the data each step receives is what its
agent expects.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from covey.agents.context import Context
from covey.errors import AgentFailure
from covey.spec.compile import CompiledWorkflow, check_targets, compile_workflow
from covey.spec.expr import truthy

TRIAGE = Path(__file__).resolve().parents[2] / "examples" / "triage"


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Loaded from its path, as `covey run examples/triage/app.py` does; it loads agents.py beside it.
app = _load("covey_examples_triage_app", TRIAGE / "app.py")
triage = sys.modules["covey_examples_triage_agents"]


@pytest.fixture(scope="module")
def inbox() -> list[dict[str, Any]]:
    return triage.load_inbox({})["tickets"]


# ------------------------------------------------------------------- the data


def test_training_data_is_large_varied_and_clean() -> None:
    rows = triage.load_training_data()
    assert len(rows) >= 400
    categories = collections.Counter(row["category"] for row in rows)
    assert set(categories) == set(triage.CATEGORIES)
    assert min(categories.values()) >= 60
    assert {row["urgency"] for row in rows} == {"low", "high"}
    texts = [row["text"].strip().lower() for row in rows]
    assert len(set(texts)) == len(texts), "duplicate tickets in the training data"


def test_inbox_has_thirty_distinct_tickets(inbox: list[dict[str, Any]]) -> None:
    assert len(inbox) == 30
    assert len({t["id"] for t in inbox}) == 30
    assert all(t["customer"] and t["text"] for t in inbox)
    shipped = {t["text"] for t in inbox}
    assert not shipped & {row["text"] for row in triage.load_training_data()}, "inbox overlaps training data"


# --------------------------------------------------------------------- ingest


def test_load_inbox_default_inline_and_relative_path(inbox: list[dict[str, Any]]) -> None:
    assert triage.load_inbox(None)["count"] == 30
    assert triage.load_inbox({"path": "data/inbox.json", "tickets": None})["tickets"] == inbox
    inline = [{"id": "x1", "text": "Where is my order 12345?"}]
    assert triage.load_inbox({"tickets": inline}) == {"tickets": inline, "count": 1}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"path": "data/missing.json"}, "no such file"),
        ({"tickets": "not a list"}, "expected a list"),
        ({"tickets": [{"id": "a"}]}, r"input\.tickets\[0\]\.text"),
        ({"tickets": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "duplicate ticket ids"),
    ],
)
def test_load_inbox_refuses_bad_input_without_retry(params: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentFailure, match=message) as caught:
        triage.load_inbox(params)
    assert caught.value.retryable is False
    assert caught.value.kind == "bad_input"


# ------------------------------------------------------------------- classify


def test_classifier_generalizes_to_held_out_tickets() -> None:
    from sklearn.model_selection import train_test_split

    rows = triage.load_training_data()
    train, test = train_test_split(
        rows, test_size=0.25, random_state=0, stratify=[r["category"] + r["urgency"] for r in rows]
    )
    model = triage.train_model(train)
    predicted = model.predict([r["text"] for r in test])
    category_acc = sum(p["category"] == r["category"] for p, r in zip(predicted, test, strict=True)) / len(
        test
    )
    urgency_acc = sum(p["urgency"] == r["urgency"] for p, r in zip(predicted, test, strict=True)) / len(test)
    majority = collections.Counter(r["urgency"] for r in test).most_common(1)[0][1] / len(test)
    assert category_acc >= 0.7, f"category accuracy {category_acc:.3f}"
    assert urgency_acc > majority, f"urgency accuracy {urgency_acc:.3f} <= majority baseline {majority:.3f}"


def test_training_is_fast() -> None:
    rows = triage.load_training_data()
    triage.train_model(rows[:50])  # warm up imports and code paths
    started = time.perf_counter()
    model = triage.train_model(rows)
    assert time.perf_counter() - started < 2.0
    assert model.n_train == len(rows)


def test_classify_ticket_output_and_obvious_cases() -> None:
    out = triage.classify_ticket(
        {
            "ticket": {
                "id": "c1",
                "text": "I was charged twice this month, please refund the duplicate payment",
            }
        }
    )
    assert set(out) == {"id", "category", "category_confidence", "urgency", "urgency_confidence"}
    assert out["id"] == "c1"
    assert out["category"] == "billing"
    assert 0.0 < out["category_confidence"] <= 1.0
    assert out["urgency"] in {"low", "high"}
    hacked = triage.classify_ticket(
        {"ticket": {"id": "c2", "text": "My account was hacked, lock it right now!"}}
    )
    assert (hacked["category"], hacked["urgency"]) == ("account", "high")
    idea = triage.classify_ticket(
        {"ticket": {"id": "c3", "text": "Love the app, please add a dark mode someday"}}
    )
    assert (idea["category"], idea["urgency"]) == ("feedback", "low")


def test_classify_ticket_trains_once_and_is_thread_safe(inbox: list[dict[str, Any]]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(lambda t: triage.classify_ticket({"ticket": t}), inbox))
    assert [o["id"] for o in outputs] == [t["id"] for t in inbox]
    assert triage.get_model() is triage.get_model()
    assert triage.classify_ticket.concurrency == 4


def test_classify_ticket_accepts_a_context() -> None:
    async def heartbeat() -> None:
        return None

    ctx = Context(
        run_id="r", task_id="t", step="classify", index=0, try_no=1, lease_no=1, heartbeat=heartbeat
    )
    assert triage.classify_ticket.wants_context
    out = triage.classify_ticket({"ticket": {"id": "k", "text": "parcel never arrived"}}, ctx)
    assert out["category"] == "shipping"
    ctx._cancel()
    with pytest.raises(Exception, match="cancelled"):
        triage.classify_ticket({"ticket": {"id": "k", "text": "parcel never arrived"}}, ctx)


def test_classify_ticket_refuses_a_ticket_without_text() -> None:
    with pytest.raises(AgentFailure, match=r"input\.ticket\.text"):
        triage.classify_ticket({"ticket": {"id": "x"}})


# -------------------------------------------------------------------- extract


def test_extract_entities_finds_orders_emails_and_amounts() -> None:
    text = (
        "Hi, I was charged $1,240.00 twice for order #A-50231 and again for ORD-30418 (plus 58 euros). "
        "Reply to Maria.Gonzalez@Example.com, not old@example.co.uk. Parcel #88302 is also late; order 77815 too."
    )
    out = triage.extract_entities({"ticket": {"id": "e1", "text": text}})
    assert out["id"] == "e1"
    assert out["order_ids"] == ["A-50231", "ORD-30418", "88302", "77815"]
    assert out["emails"] == ["maria.gonzalez@example.com", "old@example.co.uk"]
    assert [(a["value"], a["currency"]) for a in out["amounts"]] == [(1240.0, "USD"), (58.0, "EUR")]


def test_extract_entities_on_the_shipped_inbox(inbox: list[dict[str, Any]]) -> None:
    by_id = {t["id"]: triage.extract_entities({"ticket": t}) for t in inbox}
    assert by_id["T-001"]["order_ids"] == ["A-50231"]
    assert by_id["T-001"]["amounts"] == [{"value": 89.99, "currency": "USD", "text": "$89.99"}]
    assert by_id["T-014"]["amounts"][0]["value"] == 1450.0
    assert by_id["T-025"]["order_ids"] == ["B-11902"]
    assert [a["currency"] for a in by_id["T-025"]["amounts"]] == ["GBP", "GBP"]
    assert by_id["T-002"] == {"id": "T-002", "order_ids": [], "emails": [], "amounts": []}


# ------------------------------------------------------- summarize (the join)


def _classified(id_: str, category: str, urgency: str, confidence: float = 0.9) -> dict[str, Any]:
    return {
        "id": id_,
        "category": category,
        "category_confidence": confidence,
        "urgency": urgency,
        "urgency_confidence": 0.85,
    }


def _entities(id_: str, *amounts: tuple[float, str], orders: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "id": id_,
        "order_ids": list(orders),
        "emails": [],
        "amounts": [{"value": v, "currency": c, "text": f"{v} {c}"} for v, c in amounts],
    }


def test_summarize_counts_and_joins_by_id() -> None:
    classified = [
        _classified("a", "billing", "high"),
        _classified("b", "billing", "low"),
        _classified("c", "shipping", "high", confidence=0.4),
        _classified("d", "feedback", "low"),
    ]
    # Entities in another order than the classifications: the join matches by id.
    entities = [
        _entities("d"),
        _entities("c", (420.0, "USD"), orders=("60127",)),
        _entities("b", (10.0, "USD"), (5.0, "USD"), (20.0, "EUR")),
        _entities("a", (89.99, "USD")),
    ]
    out = triage.summarize({"classified": classified, "entities": entities})
    assert out["total"] == 4
    assert out["by_category"] == {"account": 0, "billing": 2, "feedback": 1, "shipping": 1, "technical": 0}
    assert out["by_urgency"] == {"high": 2, "low": 2}
    assert out["high_urgency"] == ["a", "c"]
    assert out["high_urgency_tickets"][1]["order_ids"] == ["60127"]
    # Billing tickets only, largest amount per currency per ticket: 89.99 + 10.00 USD, 20 EUR.
    assert out["disputed_amounts"] == {"EUR": 20.0, "USD": 99.99}
    assert out["low_confidence"] == ["c"]
    assert out["needs_escalation"] is True


def test_summarize_without_urgent_tickets_needs_no_escalation() -> None:
    out = triage.summarize({"classified": [_classified("a", "feedback", "low")], "entities": []})
    assert out["needs_escalation"] is False
    assert out["high_urgency"] == []
    assert out["disputed_amounts"] == {}


# ---------------------------------------------------------- escalate, report


def test_escalate_drafts_one_routed_note_per_urgent_ticket() -> None:
    summary = triage.summarize(
        {
            "classified": [_classified("a", "billing", "high"), _classified("b", "technical", "low")],
            "entities": [_entities("a", (89.99, "USD"), orders=("A-50231",))],
        }
    )
    tickets = [{"id": "a", "customer": "Maria", "text": "Charged twice!"}, {"id": "b", "text": "slow"}]
    out = triage.escalate({"summary": summary, "tickets": tickets})
    assert out["count"] == 1
    [note] = out["escalations"]
    assert set(note) == {"ticket_id", "customer", "category", "team", "priority", "note"}
    assert (note["ticket_id"], note["customer"], note["team"], note["priority"]) == (
        "a",
        "Maria",
        "Billing disputes",
        "P1",
    )
    assert "A-50231" in note["note"]
    assert "$89.99" in note["note"]
    assert "Charged twice!" in note["note"]


def test_report_with_and_without_escalations() -> None:
    summary = triage.summarize(
        {"classified": [_classified("a", "billing", "high")], "entities": [_entities("a", (50.0, "GBP"))]}
    )
    escalations = triage.escalate({"summary": summary, "tickets": []})["escalations"]
    full = triage.report({"summary": summary, "escalations": escalations})
    assert full["escalation_status"] == "escalated"
    assert full["escalated"] == ["a"]
    assert full["tickets"] == 1
    assert "Triaged 1 tickets" in full["text"]
    assert "£50.00" in full["text"]
    assert "Escalated 1" in full["text"]

    calm = triage.summarize({"classified": [_classified("b", "feedback", "low")], "entities": []})
    skipped = triage.report({"summary": calm, "escalations": None})
    assert skipped["escalation_status"] == "not_needed"
    assert skipped["escalated"] == []
    assert "No escalation needed." in skipped["text"]

    # Urgent tickets but no escalation output: say so, never "no escalation needed".
    missing = triage.report({"summary": summary, "escalations": None})
    assert missing["escalation_status"] == "unavailable"
    assert "No escalation needed" not in missing["text"]
    assert "Need escalation (no escalation notes received): a." in missing["text"]
    for out in (full, skipped, missing):
        json.dumps(out)


# ------------------------------------------------------------- the workflow


def test_app_exposes_a_valid_workflow_and_its_agents() -> None:
    compiled = compile_workflow(app.workflow)
    check_targets(
        compiled,
        skills=frozenset(skill for a in app.agents for skill in a.skills),
        agents=frozenset(a.name for a in app.agents),
    )
    deps = {name: set(step.deps) for name, step in compiled.steps.items()}
    assert deps == {
        "ingest": set(),
        "classify": {"ingest"},
        "extract": {"ingest"},
        "summarize": {"classify", "extract"},
        "escalate": {"summarize", "ingest"},
        "report": {"summarize", "escalate"},
    }
    assert compiled.steps["classify"].map is not None
    assert compiled.steps["classify"].spec.timeout_s is not None
    assert compiled.steps["classify"].spec.retry.attempts > 1
    assert compiled.steps["escalate"].when is not None
    assert compiled.steps["report"].spec.join == "any"
    # The engine stores only these projections for decisions: the map source and the condition.
    assert compiled.projections["summarize"] == frozenset({("needs_escalation",)})


def _walk(compiled: CompiledWorkflow, run_input: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Run the steps in dependency order with covey's own expressions.

    A stand-in for the engine that is just enough to check the data wiring:
    map steps run per item, a false ``when`` skips, a skipped step's output is null.
    """
    by_skill = {skill: a for a in app.agents for skill in a.skills}
    order: list[str] = []
    while len(order) < len(compiled.steps):
        order += sorted(
            n for n, s in compiled.steps.items() if n not in order and all(d in order for d in s.deps)
        )
    outputs: dict[str, Any] = {}
    skipped: list[str] = []
    for name in order:
        step = compiled.steps[name]
        scope = {"input": run_input, "steps": outputs}
        if step.when is not None and not truthy(step.when.evaluate(scope)):
            skipped.append(name)
            continue
        fn = by_skill[step.spec.skill]
        if step.map is None:
            outputs[name] = fn(step.input.render(scope))
        else:
            items = step.map.evaluate(scope)
            outputs[name] = [
                fn(step.input.render({**scope, "item": item, "index": i})) for i, item in enumerate(items)
            ]
        json.dumps(outputs[name])  # every output is JSON
    return {"report": outputs["report"]}, skipped


def test_workflow_data_flows_end_to_end_on_the_shipped_inbox() -> None:
    compiled = compile_workflow(app.workflow)
    result, skipped = _walk(compiled, {})
    report = result["report"]
    assert skipped == []
    assert report["tickets"] == 30
    assert sum(report["by_category"].values()) == 30
    assert report["escalated"]
    assert report["escalation_status"] == "escalated"
    assert "Triaged 30 tickets" in report["text"]


def test_workflow_skips_escalation_for_a_calm_inbox() -> None:
    compiled = compile_workflow(app.workflow)
    tickets = [
        {"id": "q1", "customer": "Ann", "text": "Do you ship to Norway? How long does delivery take?"},
        {"id": "q2", "customer": "Bo", "text": "Love the new dashboard, nice work!"},
    ]
    result, skipped = _walk(compiled, {"tickets": tickets})
    assert skipped == ["escalate"]
    assert result["report"]["escalation_status"] == "not_needed"
    assert result["report"]["tickets"] == 2
