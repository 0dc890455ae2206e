"""The group commit of the Redis store: one script call per batch.

Python turns a :class:`~covey.store.base.CommitBatch` into one JSON payload
(the shape ``commit.lua`` reads) plus the bodies as ARGV entries; the script
checks the epoch, every run's sequence and the staged state writes before it
writes anything, then writes the runs that passed, then grants the batch's
claims. Most batches need nothing else. A batch that finishes a run with an
output mapping, or stages reducer updates, is decided from a snapshot first
(one more script call): the mapping is rendered and the reducers run here,
and the commit script checks that nothing they read has moved (the run's
sequence, each key's version), or answers ``retry`` without writing and the
batch is decided again. Rendering before the write rather than after keeps
the output in the same atomic step as the run's finish: a crash in between
cannot leave a finished run without its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from covey.engine.commands import EnqueueTask
from covey.errors import Conflict, CoveyError, VersionConflict
from covey.store.base import CommitBatch, CommitResult, RunWrite, shard_of
from covey.store.inputs import reads_input, render_input, template_of
from covey.store.redis.keys import label_set
from covey.store.redis.plan import Blobs, Planner
from covey.store.redis.reads import assemble_output, from_json, text
from covey.store.redis.shared import MAX_ATTEMPTS, Snapshot
from covey.store.redis.tasks import Tasks, lease_need

__all__ = ["Commit"]


@dataclass(slots=True)
class _Notes:
    """What Python decided for one run of the batch, kept to report it once the commit returns."""

    errors: list[tuple[int, str]] = field(default_factory=list)
    """(write number, message) of staged writes refused here."""
    output: Any = None
    rendered: bool = False


@dataclass(slots=True)
class _Plan:
    payload: bytes
    blobs: Blobs
    notes: list[_Notes]


class Commit(Tasks):
    """``commit``: every run of a batch in one script call, then its claims."""

    def commit_now(self, batch: CommitBatch) -> CommitResult | None:
        """Never: a commit is a round trip to the server (see ``Store.commit_now``)."""
        return None

    async def commit(self, batch: CommitBatch) -> CommitResult:
        """Write a batch atomically, then grant its claims."""
        plan = self._plan(batch, None)
        for _ in range(MAX_ATTEMPTS):
            if plan is None:
                plan = self._plan(batch, await self._snapshot_for(batch))
            assert plan is not None
            reply = await self.script("commit", [plan.payload, *plan.blobs.items])
            if reply[0] == b"ok":
                return await self._result(batch, plan, reply)
            if reply[0] == b"epoch":
                lost = sorted(int(s) for s in reply[1])
                raise Conflict(
                    f"epoch {batch.epoch} no longer holds shard(s) {lost[:5]}; another engine loop took over"
                )
            plan = None  # something decided from the snapshot moved: decide again
        raise Conflict(f"the commit's runs and state kept changing; tried {MAX_ATTEMPTS} times")

    async def _snapshot_for(self, batch: CommitBatch) -> Snapshot:
        keys = [(op.namespace, op.key) for w in batch.runs for op in w.state_ops]
        outputs = [
            self.keys.output(w.run_id, step)
            for w in batch.runs
            if w.output_template is not None
            for step in sorted(template_of(w.output_template).steps)
        ]
        runs = [self.keys.run(w.run_id) for w in batch.runs]
        return await self.snapshot(runs=runs, keys=list(dict.fromkeys(keys)), outputs=outputs)

    def _plan(self, batch: CommitBatch, snap: Snapshot | None) -> _Plan | None:
        """The script's payload; None when it needs a snapshot it was not given."""
        blobs = Blobs()
        planner = Planner(self.keys, blobs, snap.states if snap is not None else None)
        runs, notes = [], []
        outputs = iter(snap.outputs) if snap is not None else iter(())
        for index, write in enumerate(batch.runs):
            payload = self._run_payload(write, blobs)
            note = _Notes()
            expected = snap is not None and self._expected(write, snap.runs[index][0])
            if write.state_ops:
                ops = self._staged(write, planner, note, snap is not None, expected)
                if ops is None:
                    return None
                payload["ops"] = ops
            if write.output_template is not None:
                payload["tpl"] = True
                steps = sorted(template_of(write.output_template).steps)
                if snap is not None:
                    stored = {step: next(outputs) for step in steps}
                    if expected:
                        note.output, note.rendered = self._render(write, snap.runs[index][1], stored), True
                elif _renders_alone(write):
                    # From this commit's own outputs; unused if the run's sequence check fails.
                    alone: dict[str, dict[bytes, bytes]] = {step: {} for step in steps}
                    note.output, note.rendered = self._render(write, None, alone), True
                else:
                    return None
                if note.rendered:
                    payload["rout"] = blobs.add(orjson.dumps(note.output))
            runs.append(payload)
            notes.append(note)
        body = {
            "epoch": batch.epoch,
            "shards": sorted({shard_of(w.run_id) for w in batch.runs}),
            "runs": runs,
            "claims": [
                [c.worker_id, sorted(c.targets), dict(c.labels), c.limit, c.lease_ms] for c in batch.claims
            ],
            "cons": list(batch.consumed),
            "keep": self.feed_keep,
        }
        if self.hint_prefix is not None and batch.hints:
            body["hp"], body["hints"] = self.hint_prefix, sorted(batch.hints)
        return _Plan(orjson.dumps(body), blobs, notes)

    @staticmethod
    def _expected(write: RunWrite, seq: int | None) -> bool:
        """Whether the snapshot says this run will pass its sequence check."""
        return (seq if seq is not None else 0) == write.expected_seq and (
            seq is not None or write.new is not None
        )

    def _staged(
        self, write: RunWrite, planner: Planner, note: _Notes, decided: bool, expected: bool
    ) -> list[list[Any]] | None:
        if not decided:
            return planner.undecided(write.state_ops)
        if not expected:
            return [planner.ask(op) for op in write.state_ops]
        ops = []
        for number, op in enumerate(write.state_ops, 1):
            staged, error = planner.decide_staged(op)
            ops.append(staged)
            if error is not None:
                note.errors.append((number, error))
        return ops

    def _render(
        self, write: RunWrite, stored_input: bytes | None, stored: dict[str, dict[bytes, bytes]]
    ) -> Any:
        """The run's output from its mapping: stored outputs with this commit's laid over them."""
        assert write.output_template is not None
        rows = {step: dict(found) for step, found in stored.items()}
        for step, index, body in write.outputs:
            if step in rows:
                rows[step][str(index).encode()] = body
        run_input = from_json(write.new.input if write.new is not None else stored_input)
        outputs = {step: assemble_output(found) for step, found in rows.items()}
        try:
            return render_input(
                template_of(write.output_template), run_input=run_input, outputs=outputs, item=None, index=-1
            )
        except CoveyError as exc:
            return {"error": str(exc)}

    def _run_payload(self, w: RunWrite, blobs: Blobs) -> dict[str, Any]:
        """One run's writes as ``commit.lua`` reads them; bodies go to ``blobs``."""
        tag = self.keys.run_tag(w.run_id)
        p: dict[str, Any] = {
            "id": w.run_id,
            "tag": tag,
            "exp": w.expected_seq,
            "new": w.new_seq,
            "evn": len(w.events),
        }
        if len(w.events) == 1:
            p["ev"] = blobs.add(w.events[0][3])
        elif w.events:  # one Stream entry per commit: its events as one JSON array
            p["ev"] = blobs.add(b"[" + b",".join(event[3] for event in w.events) + b"]")
        if w.new is not None:
            nr = {"wf": w.new.workflow, "hash": w.new.spec_hash, "in": blobs.add(w.new.input)}
            if w.new.spec_hash not in self._specs:
                nr["spec"] = blobs.add_named(w.new.spec_hash, w.new.spec)
            if w.new.parent is not None:
                nr["parent"] = w.new.parent
            p["nr"] = nr
        if w.status is not None:
            p["st"] = w.status
        if w.output is not None:
            p["out"] = blobs.add(w.output)
        if w.error is not None:
            p["err"] = blobs.add(w.error)
        if w.finished_ms is not None:
            p["fin"] = w.finished_ms
        self._children(w, p, blobs)
        return p

    def _children(self, w: RunWrite, p: dict[str, Any], blobs: Blobs) -> None:
        if w.enqueue:
            p["enq"] = [self._task(w, t, blobs) for t in w.enqueue]
        if w.drop:
            p["drop"] = [self.keys.task(task_id) for task_id in w.drop]
        if w.cancel_timers:
            p["ctm"] = list(w.cancel_timers)
        if w.set_timers:
            p["stm"] = [
                [
                    t.timer_id,
                    t.due_ms,
                    orjson.dumps(
                        [t.run_id, self.keys.run_tag(t.run_id), t.kind, t.task_id, t.lease_no]
                    ).decode(),
                ]
                for t in w.set_timers
            ]
        if w.outputs:
            p["outs"] = [[step, index, blobs.add(body)] for step, index, body in w.outputs]
        if w.consumed:  # each row by [seq, id] where its id is known here, else by seq
            p["cons"] = [seq if (row_id := self.row_id(seq)) is None else [seq, row_id] for seq in w.consumed]
        if w.seen:
            p["seen"] = list(w.seen)
        if w.drop_namespace is not None:
            p["dns"] = [self.keys.ns_tag(w.drop_namespace), w.drop_namespace]

    def _task(self, w: RunWrite, t: EnqueueTask, blobs: Blobs) -> list[Any]:
        own = t.task_id.startswith(w.run_id) and t.task_id[len(w.run_id) : len(w.run_id) + 1] == "/"
        template = orjson.dumps(t.input_template)
        return [
            "" if own else self.keys.task(t.task_id),
            t.task_id,
            t.step,
            str(t.index),
            t.target,
            label_set(t.labels),
            t.priority,
            str(t.try_no),
            str(t.lease_floor),
            "" if t.timeout_ms is None else str(t.timeout_ms),
            blobs.add(template),
            blobs.add(orjson.dumps(t.item)),
            blobs.add(orjson.dumps(t.input_schema)) if t.input_schema else 0,
            lease_need(template),
        ]

    async def _result(self, batch: CommitBatch, plan: _Plan, reply: list[Any]) -> CommitResult:
        _, conflicts, skipped, claims, reads = reply
        result = CommitResult(conflicts={text(run_id) for run_id in conflicts})
        errors = {index: list(note.errors) for index, note in enumerate(plan.notes)}
        for run_number, number, found in skipped:
            write = batch.runs[int(run_number) - 1]
            op = write.state_ops[int(number) - 1]
            conflict = VersionConflict(op.namespace, op.key, op.if_version or 0, int(found))
            errors[int(run_number) - 1].append((int(number), str(conflict)))
        for index, write in enumerate(batch.runs):
            if write.run_id in result.conflicts:
                continue
            if errors[index]:
                result.state_errors.setdefault(write.run_id, []).extend(m for _, m in sorted(errors[index]))
            if plan.notes[index].rendered:
                result.outputs[write.run_id] = plan.notes[index].output
        for write in batch.runs:
            if write.new is not None and write.run_id not in result.conflicts:
                self._specs.setdefault(write.new.spec_hash, write.new.spec)  # stored now: not sent again
        for request, leases in zip(batch.claims, await self.leases(claims, reads), strict=True):
            # One worker may claim twice in a batch: keep both grants, or the first would be leased to nobody.
            result.leases.setdefault(request.worker_id, []).extend(leases)
        return result


def _renders_alone(write: RunWrite) -> bool:
    """Whether a finishing run's output renders from this commit alone, with no read of the store.

    So it does when its mapping reads no stored input and every step it names
    is a single step (not a map) whose output this commit writes: the usual
    end of a run, whose last steps finish in the commit that finishes it.
    """
    assert write.output_template is not None
    template = template_of(write.output_template)
    if reads_input(template) and write.new is None:
        return False
    written: dict[str, set[int]] = {}
    for step, index, _ in write.outputs:
        written.setdefault(step, set()).add(index)
    return all(written.get(step) == {-1} for step in template.steps)
