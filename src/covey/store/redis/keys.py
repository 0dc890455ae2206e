"""Where the Redis store keeps what: every key name, in one place.

All keys start with a hash tag. Keys of one run (and of its shared-state
namespace ``run:<id>``) carry its shard's tag ``{prefix:shard}``, so a shard's
keys share a Cluster slot; keys that belong to no shard carry ``{prefix}``.
This release targets a single Redis node: one commit may touch several shards
and the global keys, and the scripts build key names from data they are
passed, which Redis Cluster does not allow. Cluster is not supported yet.

Keys of no shard (``G`` is ``{prefix}:``)::

    G meta                     hash: layout (version), epoch (last one given)
    G shards                   hash: shard -> "epoch:until_ms"
    G specs                    hash: spec hash -> pinned spec JSON
    G runs:<status>            zset: run keys by created_ms, each run in its status's
    G finished                 zset: the keys of finished runs (a status other than running, and a
                               finished time) by finished_ms, for purge_finished
    G ready:<target>           zset: ready task keys that need no label, by claim score
    G readyl:<target>\\n<set>   zset: ready task keys needing the label set <set> (canonical JSON)
    G labelsets:<target>       set: the label sets of <target> that have ready tasks
    G leases                   zset: leased task keys by lease_until_ms
    G timers                   zset: timer ids by due_ms
    G timer                    hash: timer id -> JSON [run id, shard tag, kind, task id, lease no]
    G inbox                    zset: inbox rows by seq, each "<shard tag>[seq, id, run id, event, output, ops]"
    G inbox:seq                counter: the last seq given out (reserved in blocks: gaps are allowed)
    G seen                     hash: id -> "" while its inbox row waits, a client-chosen id -> its
                               run id once committed (an id in it is not appended again)
    G workers, G workers:hb    hash: worker id -> JSON, and -> heartbeat_ms
    G waiter                   hash: worker id -> its standing claim (JSON: token, labels, lease_ms, until)
    G waiting:<target>         list: "worker|token" of the standing claims that serve <target>, oldest first
    G grant:<worker>           list: leases granted to the worker's standing claim (JSON), or "stop"
    G waittok                  counter: the last standing claim's token
    G inwait:<epoch>           string, with a TTL: the engine node of <epoch> waits for pushed rows
    G inq:<epoch>              list: copies of new inbox rows of the shards <epoch> holds (as in G inbox)
    G lock:<name>              hash: permit slot -> "token|expires_ms|h<holder>"
    G locktok:<name>           counter: the last fencing token of <name>

Keys of a shard (``T`` is ``{prefix:shard}:``)::

    T run:<run id>             hash: the run row; also names what of the run no other key of it lists:
                               "o:<step>" per step with outputs, "t:<timer id>" per timer it set and
                               that is still due, "s:<id>" per client-chosen id it remembered (values "")
    T ev:<run id>              stream: the run's history, an entry per commit, its id "<seq>-0" with
                               the seq of the commit's last event; field e: the event JSON, or, for
                               several events, es: a JSON array of them in order
    T tasks:<run id>           set: the run's task keys
    T task:<task id>           hash: a task row (status ready, leased or expired)
    T out:<run id>/<step>      hash: index -> output JSON (-1 for a plain step)
    T inbox                    zset: the ids of the shard's inbox rows by seq

A shared-state namespace ``N`` (tag ``T`` for ``run:<id>``, ``G`` otherwise)::

    nsdata:N   hash: "v:<key>" -> value JSON (gone once deleted), "n:<key>" -> last version
    nskeys:N   zset: existing keys, score 0 (byte order, which is code point order in UTF-8)
    nsfeed:N   stream: the change feed, entry id "<seq>-0", trimmed to its last feed_keep entries
    nsseq:N    string: the feed's counter, the last seq given (a trim leaves it: no seq comes twice)

Run ids hold no ``/``, so a task id ``run/step[/index]`` names its run, and
with it its shard.
"""

from __future__ import annotations

from functools import lru_cache

import orjson

from covey.engine.state import RUN_STATUSES
from covey.errors import ConfigError
from covey.store.base import SHARDS, shard_of

__all__ = ["Keys", "check_prefix", "label_set"]


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start key names; ConfigError otherwise."""
    if not prefix or any(c in prefix for c in "{}: \t\r\n"):
        raise ConfigError(
            f"invalid Redis key prefix {prefix!r}: use a non-empty name without braces, colons or spaces"
        )
    return prefix


def label_set(labels: dict[str, str]) -> str:
    """The labels a task needs as canonical JSON (sorted keys), naming its ready set; '' for none."""
    return orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode() if labels else ""


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self.g = f"{{{prefix}}}:"
        self.tags = [f"{{{prefix}:{shard}}}:" for shard in range(SHARDS)]
        self._run_tag = lru_cache(maxsize=65_536)(self._tag_of)

    def _tag_of(self, run_id: str) -> str:
        return self.tags[shard_of(run_id)]

    def run_tag(self, run_id: str) -> str:
        """The tag of a run's shard."""
        return self._run_tag(run_id)

    def run(self, run_id: str) -> str:
        """A run's row."""
        return f"{self.run_tag(run_id)}run:{run_id}"

    def events(self, run_id: str) -> str:
        """A run's history."""
        return f"{self.run_tag(run_id)}ev:{run_id}"

    def tasks(self, run_id: str) -> str:
        """The set of a run's task keys."""
        return f"{self.run_tag(run_id)}tasks:{run_id}"

    def task(self, task_id: str) -> str:
        """A task's row."""
        run_id = task_id.partition("/")[0]
        return f"{self.run_tag(run_id)}task:{task_id}"

    def output(self, run_id: str, step: str) -> str:
        """The outputs of one step of a run."""
        return f"{self.run_tag(run_id)}out:{run_id}/{step}"

    def runs(self, status: str | None) -> list[str]:
        """The index of the runs with one status; for all runs, every status's (each run is in one)."""
        return [f"{self.g}runs:{s}" for s in (RUN_STATUSES if status is None else (status,))]

    def ns_tag(self, namespace: str) -> str:
        """The tag of a namespace's keys: its run's shard for ``run:<id>``, else the global one."""
        if namespace.startswith("run:"):
            return self.run_tag(namespace[4:])
        return self.g

    def ns(self, kind: str, namespace: str) -> str:
        """A namespace's ``nsdata``, ``nskeys``, ``nsfeed`` or ``nsseq`` key."""
        return f"{self.ns_tag(namespace)}{kind}:{namespace}"

    def lock(self, name: str) -> str:
        """A lock's permits."""
        return f"{self.g}lock:{name}"

    def grant(self, worker_id: str) -> str:
        """The list a worker with a standing claim blocks on for its grant."""
        return f"{self.g}grant:{worker_id}"

    def global_key(self, name: str) -> str:
        """A key of no shard (``meta``, ``seen``, ``workers``...)."""
        return f"{self.g}{name}"
