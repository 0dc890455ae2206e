"""Agents of the support-triage demo: ingest, classify, extract, summarize, escalate, report.

Each agent is a plain function on JSON: covey hands it the step's resolved
input and records what it returns. ``classify_ticket`` is real machine
learning that runs offline: a TF-IDF (word and character n-grams) +
logistic-regression model trained, once per process, on the labelled tickets
shipped in ``data/tickets_train.csv`` (453 rows; training takes about 0.1 s).

Everything here is deterministic (no clocks, no randomness), so a retried or
replayed task produces the same output.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covey.agents.context import Context
from covey.agents.registry import agent
from covey.errors import AgentFailure

__all__ = [
    "ALL_AGENTS",
    "CATEGORIES",
    "INBOX_JSON",
    "TRAIN_CSV",
    "TicketModel",
    "classify_ticket",
    "escalate",
    "extract_entities",
    "find_amounts",
    "find_emails",
    "find_order_ids",
    "get_model",
    "load_inbox",
    "load_training_data",
    "report",
    "summarize",
    "train_model",
]

HERE = Path(__file__).resolve().parent
TRAIN_CSV = HERE / "data" / "tickets_train.csv"
INBOX_JSON = HERE / "data" / "inbox.json"

CATEGORIES = ("account", "billing", "feedback", "shipping", "technical")
URGENCIES = ("high", "low")

#: Who picks up an escalated ticket, by category.
TEAMS = {
    "account": "Trust & Safety",
    "billing": "Billing disputes",
    "feedback": "Customer experience lead",
    "shipping": "Logistics desk",
    "technical": "On-call engineering",
}

#: Category confidence under which a ticket is flagged for a human to check.
LOW_CONFIDENCE = 0.5

log = logging.getLogger("covey.examples.triage")


def _bad_input(message: str) -> AgentFailure:
    """An input error: retrying would fail the same way, so it is not retried."""
    return AgentFailure(message, kind="bad_input", retryable=False)


def _ticket(value: Any, where: str) -> dict[str, Any]:
    """Check that ``value`` is a ticket object with a string ``id`` and ``text``."""
    if not isinstance(value, Mapping):
        raise _bad_input(f"{where}: expected a ticket object, got {type(value).__name__}")
    for key in ("id", "text"):
        if not isinstance(value.get(key), str) or not value[key].strip():
            raise _bad_input(f"{where}.{key}: expected a non-empty string")
    return dict(value)


# --------------------------------------------------------------------- ingest


@agent(skills=["ingest"])
def load_inbox(input: Mapping[str, Any] | None) -> dict[str, Any]:
    """Load the tickets to triage.

    Input ``{"path": str | None, "tickets": list | None}``: the tickets given
    inline, else those of the JSON file at ``path`` (relative paths are
    resolved against the ``examples/triage`` folder), else the shipped
    ``data/inbox.json``. Returns ``{"tickets": [...], "count": n}``.
    """
    params = dict(input or {})
    tickets = params.get("tickets")
    if tickets is None:
        path = Path(params.get("path") or INBOX_JSON)
        if not path.is_absolute():
            path = HERE / path
        try:
            tickets = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _bad_input(f"input.path: no such file {str(path)!r}") from None
        except json.JSONDecodeError as exc:
            raise _bad_input(f"input.path: {path.name} is not valid JSON: {exc}") from None
    if not isinstance(tickets, list):
        raise _bad_input("input.tickets: expected a list of tickets")
    checked = [_ticket(item, f"input.tickets[{i}]") for i, item in enumerate(tickets)]
    ids = Counter(item["id"] for item in checked)
    dupes = sorted(key for key, n in ids.items() if n > 1)
    if dupes:
        raise _bad_input(f"input.tickets: duplicate ticket ids {dupes}")
    return {"tickets": checked, "count": len(checked)}


# ------------------------------------------------------------------- classify


@dataclass(frozen=True, slots=True)
class TicketModel:
    """Shared TF-IDF features and two logistic-regression heads (category, urgency)."""

    features: Any
    category: Any
    urgency: Any
    n_train: int
    train_seconds: float

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Category and urgency of each text, each with the model's probability."""
        matrix = self.features.transform(list(texts))
        out: list[dict[str, Any]] = []
        cat_proba = self.category.predict_proba(matrix)
        urg_proba = self.urgency.predict_proba(matrix)
        for cat_row, urg_row in zip(cat_proba, urg_proba, strict=True):
            c, u = int(cat_row.argmax()), int(urg_row.argmax())
            out.append(
                {
                    "category": str(self.category.classes_[c]),
                    "category_confidence": round(float(cat_row[c]), 3),
                    "urgency": str(self.urgency.classes_[u]),
                    "urgency_confidence": round(float(urg_row[u]), 3),
                }
            )
        return out


def load_training_data(path: Path = TRAIN_CSV) -> list[dict[str, str]]:
    """The labelled tickets (``text``, ``category``, ``urgency``) of a CSV file."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [
            {"text": row["text"], "category": row["category"], "urgency": row["urgency"]}
            for row in csv.DictReader(handle)
        ]
    for i, row in enumerate(rows, start=2):
        if row["category"] not in CATEGORIES or row["urgency"] not in URGENCIES:
            raise ValueError(f"{path.name} line {i}: bad label {row['category']!r}/{row['urgency']!r}")
    return rows


def train_model(rows: Sequence[Mapping[str, str]]) -> TicketModel:
    """Fit the feature extractor once and both classifier heads on ``rows``.

    Word uni/bigrams catch topic words ("refund", "tracking"); character
    n-grams within words make the model robust to typos and inflections
    ("subscripton", "replacment"). ``newton-cg`` converges in a few
    iterations on this sparse, small problem (lbfgs needs ~30 and is slower).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion

    started = time.perf_counter()
    texts = [row["text"] for row in rows]
    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(3, 5),
                    min_df=2,
                    sublinear_tf=True,
                    strip_accents="unicode",
                ),
            ),
        ]
    )
    matrix = features.fit_transform(texts)

    def head(labels: list[str]) -> Any:
        model = LogisticRegression(C=10.0, class_weight="balanced", solver="newton-cg", max_iter=1000)
        return model.fit(matrix, labels)

    category = head([row["category"] for row in rows])
    urgency = head([row["urgency"] for row in rows])
    return TicketModel(features, category, urgency, len(texts), time.perf_counter() - started)


_model: TicketModel | None = None
_model_lock = threading.Lock()


def get_model() -> TicketModel:
    """The process's model, trained on first use (thread-safe; later calls are free)."""
    global _model
    model = _model
    if model is None:
        with _model_lock:
            model = _model
            if model is None:
                model = _model = train_model(load_training_data())
                log.info("triage model trained on %d tickets in %.3f s", model.n_train, model.train_seconds)
    return model


@agent(skills=["classify"], concurrency=4)
def classify_ticket(input: Mapping[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """Predict a ticket's category and urgency.

    Input ``{"ticket": {"id", "text", ...}}``. Returns ``{"id", "category",
    "category_confidence", "urgency", "urgency_confidence"}``.
    """
    ticket = _ticket((input or {}).get("ticket"), "input.ticket")
    if ctx is not None:
        ctx.check_cancelled()
    [prediction] = get_model().predict([ticket["text"]])
    if ctx is not None:
        ctx.log.debug("ticket %s -> %s/%s", ticket["id"], prediction["category"], prediction["urgency"])
    return {"id": ticket["id"], **prediction}


# -------------------------------------------------------------------- extract

_ORDER = re.compile(
    r"""
    \b(?P<ord>ORD-\d{3,})\b                                   # ORD-30418
    | \border\b\s*(?:no\.?|number|num|id)?\s*[:#]?\s*
      (?P<after>[A-Z]{1,3}-\d{3,}|\d{4,})\b                   # order #A-50231, order 77815
    | \#(?P<hash>[A-Z]{1,3}-\d{3,}|\d{4,})\b                  # #88302
    """,
    re.IGNORECASE | re.VERBOSE,
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?"
_AMOUNT = re.compile(
    rf"""
    (?P<sym>[$€£])\s?(?P<n1>{_NUMBER})(?![\d,])
    | (?<![\w.,])(?P<n2>{_NUMBER})\s?(?P<word>usd|eur|gbp|dollars?|bucks|euros?|pounds?)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "usd": "USD", "eur": "EUR", "gbp": "GBP"}
_CURRENCY_WORDS = {"dollar": "USD", "buck": "USD", "euro": "EUR", "pound": "GBP"}


def _currency(token: str) -> str:
    token = token.lower()
    return _CURRENCY.get(token) or _CURRENCY_WORDS[token.rstrip("s")]


def find_order_ids(text: str) -> list[str]:
    """Order numbers in ``text``, upper-cased, in order of appearance, without repeats."""
    found = (m.group("ord") or m.group("after") or m.group("hash") for m in _ORDER.finditer(text))
    return list(dict.fromkeys(value.upper() for value in found))


def find_emails(text: str) -> list[str]:
    """E-mail addresses in ``text``, lower-cased, without repeats."""
    return list(dict.fromkeys(m.group(0).lower() for m in _EMAIL.finditer(text)))


def find_amounts(text: str) -> list[dict[str, Any]]:
    """Money amounts in ``text`` (``$89.99``, ``€1,450.00``, ``58 dollars``) with their currency."""
    amounts = []
    for m in _AMOUNT.finditer(text):
        number = m.group("n1") or m.group("n2")
        currency = _currency(m.group("sym") or m.group("word"))
        amounts.append({"value": float(number.replace(",", "")), "currency": currency, "text": m.group(0)})
    return amounts


@agent(skills=["extract"], concurrency=4)
def extract_entities(input: Mapping[str, Any]) -> dict[str, Any]:
    """Pull order numbers, e-mail addresses and money amounts out of a ticket.

    Input ``{"ticket": {"id", "text", ...}}``. Returns ``{"id", "order_ids",
    "emails", "amounts"}``; each amount is ``{"value", "currency", "text"}``.
    """
    ticket = _ticket((input or {}).get("ticket"), "input.ticket")
    text = ticket["text"]
    return {
        "id": ticket["id"],
        "order_ids": find_order_ids(text),
        "emails": find_emails(text),
        "amounts": find_amounts(text),
    }


# ------------------------------------------------------------------ summarize


@agent(skills=["summarize"])
def summarize(input: Mapping[str, Any]) -> dict[str, Any]:
    """Join the classifications and the entities of every ticket into one summary.

    Input ``{"classified": [...], "entities": [...]}``: the outputs of the two
    map steps (matched by ticket id, so their order does not matter). The
    disputed amount of a billing ticket is the largest amount it mentions, per
    currency. ``needs_escalation`` is true when any ticket is high-urgency.
    """
    classified = (input or {}).get("classified")
    entities = (input or {}).get("entities") or []
    if not isinstance(classified, list) or not isinstance(entities, list):
        raise _bad_input("input.classified and input.entities must be lists")
    by_id = {item["id"]: item for item in entities if isinstance(item, Mapping) and "id" in item}

    by_category = dict.fromkeys(CATEGORIES, 0)
    by_urgency = dict.fromkeys(URGENCIES, 0)
    disputed: dict[str, float] = {}
    high: list[dict[str, Any]] = []
    low_confidence: list[str] = []
    for i, item in enumerate(classified):
        if not isinstance(item, Mapping) or not {"id", "category", "urgency"} <= item.keys():
            raise _bad_input(f"input.classified[{i}]: expected a classify_ticket output")
        found = by_id.get(item["id"], {})
        by_category[item["category"]] = by_category.get(item["category"], 0) + 1
        by_urgency[item["urgency"]] = by_urgency.get(item["urgency"], 0) + 1
        if item.get("category_confidence", 1.0) < LOW_CONFIDENCE:
            low_confidence.append(item["id"])
        if item["category"] == "billing":
            largest: dict[str, float] = {}
            for amount in found.get("amounts", []):
                largest[amount["currency"]] = max(largest.get(amount["currency"], 0.0), amount["value"])
            for currency, value in largest.items():
                disputed[currency] = round(disputed.get(currency, 0.0) + value, 2)
        if item["urgency"] == "high":
            high.append(
                {
                    "id": item["id"],
                    "category": item["category"],
                    "urgency_confidence": item.get("urgency_confidence"),
                    "order_ids": found.get("order_ids", []),
                    "emails": found.get("emails", []),
                    "amounts": found.get("amounts", []),
                }
            )
    return {
        "total": len(classified),
        "by_category": by_category,
        "by_urgency": by_urgency,
        "high_urgency": [item["id"] for item in high],
        "high_urgency_tickets": high,
        "low_confidence": low_confidence,
        "disputed_amounts": dict(sorted(disputed.items())),
        "needs_escalation": bool(high),
    }


# ------------------------------------------------------------------- escalate


def _money(amount: Mapping[str, Any]) -> str:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(amount["currency"], "")
    return f"{symbol}{amount['value']:,.2f}" if symbol else f"{amount['value']:,.2f} {amount['currency']}"


def _note(ticket: Mapping[str, Any], customer: str, text: str) -> str:
    """The escalation note for one ticket: who, what, references, and the ticket's opening."""
    parts = [f"High-urgency {ticket['category']} ticket {ticket['id']} from {customer}."]
    if ticket["order_ids"]:
        parts.append(f"Orders: {', '.join(ticket['order_ids'])}.")
    if ticket["amounts"]:
        parts.append(f"Amounts mentioned: {', '.join(_money(a) for a in ticket['amounts'])}.")
    if ticket["emails"]:
        parts.append(f"Contact: {', '.join(ticket['emails'])}.")
    snippet = text if len(text) <= 140 else text[:137].rstrip() + "..."
    parts.append(f'Customer wrote: "{snippet}"')
    return " ".join(parts)


@agent(skills=["escalate"])
def escalate(input: Mapping[str, Any]) -> dict[str, Any]:
    """Draft an escalation note for each high-urgency ticket, routed to the right team.

    Input ``{"summary": <summarize output>, "tickets": [...]}`` (the tickets
    give the customer's name and words). Returns ``{"escalations": [...],
    "count": n}``; P1 when the model is at least 80% sure of the urgency.
    """
    summary = (input or {}).get("summary")
    if not isinstance(summary, Mapping):
        raise _bad_input("input.summary: expected the summarize output")
    tickets = {t["id"]: t for t in (input or {}).get("tickets") or [] if isinstance(t, Mapping) and "id" in t}
    escalations = []
    for item in summary.get("high_urgency_tickets", []):
        original = tickets.get(item["id"], {})
        customer = original.get("customer") or "unknown customer"
        confidence = item.get("urgency_confidence") or 0.0
        escalations.append(
            {
                "ticket_id": item["id"],
                "customer": customer,
                "category": item["category"],
                "team": TEAMS.get(item["category"], "Support lead"),
                "priority": "P1" if confidence >= 0.8 else "P2",
                "note": _note(item, customer, original.get("text", "")),
            }
        )
    return {"escalations": escalations, "count": len(escalations)}


# --------------------------------------------------------------------- report


@agent(skills=["report"])
def report(input: Mapping[str, Any]) -> dict[str, Any]:
    """The run's final report, with a short human-readable ``text``.

    Input ``{"summary": <summarize output>, "escalations": [...] | null}``.
    ``escalation_status`` says what happened: ``escalated``; ``not_needed``
    (no urgent ticket, so the escalate step was skipped); or ``unavailable``
    (urgent tickets, but no escalation output reached this step: the report
    names them instead of claiming nothing needed escalating).
    """
    summary = (input or {}).get("summary")
    if not isinstance(summary, Mapping):
        raise _bad_input("input.summary: expected the summarize output")
    given = (input or {}).get("escalations")
    escalations = list(given or [])
    if given is not None:
        status = "escalated"
    elif summary.get("needs_escalation"):
        status = "unavailable"
    else:
        status = "not_needed"

    categories = ", ".join(f"{n} {name}" for name, n in summary["by_category"].items() if n)
    lines = [
        f"Triaged {summary['total']} tickets: {categories or 'none'}.",
        f"{summary['by_urgency'].get('high', 0)} high urgency, {summary['by_urgency'].get('low', 0)} low.",
    ]
    if summary.get("disputed_amounts"):
        money = ", ".join(_money({"value": v, "currency": c}) for c, v in summary["disputed_amounts"].items())
        lines.append(f"Disputed in billing tickets: {money}.")
    if status == "escalated":
        p1 = sum(1 for e in escalations if e.get("priority") == "P1")
        teams = Counter(e["team"] for e in escalations)
        routed = ", ".join(f"{team} ({n})" for team, n in sorted(teams.items()))
        lines.append(f"Escalated {len(escalations)} ({p1} P1): {routed or 'none'}.")
    elif status == "unavailable":
        lines.append(f"Need escalation (no escalation notes received): {', '.join(summary['high_urgency'])}.")
    else:
        lines.append("No escalation needed.")
    if summary.get("low_confidence"):
        lines.append(f"Check by hand (unsure category): {', '.join(summary['low_confidence'])}.")
    return {
        "tickets": summary["total"],
        "by_category": summary["by_category"],
        "by_urgency": summary["by_urgency"],
        "disputed_amounts": summary.get("disputed_amounts", {}),
        "escalation_status": status,
        "escalated": [e["ticket_id"] for e in escalations],
        "low_confidence": summary.get("low_confidence", []),
        "text": "\n".join(lines),
    }


#: Every agent of the demo, in workflow order.
ALL_AGENTS = [load_inbox, classify_ticket, extract_entities, summarize, escalate, report]
