-- commit: one engine-loop batch (covey.store.redis.commit builds ARGV[2], see there), then its claims.
-- Returns {'epoch', lost shards}, {'retry'} (Python decided something from a read that has moved
-- on; nothing was written), or {'ok', conflicting run ids, {run, write, version} of staged writes
-- skipped for an if_version, leases granted per claim, what those leases' inputs read
-- (lease_reads)}.

local P = cjson.decode(ARGV[2])
local now = now_ms()
local NOW = int(now)

-- Checks, before anything is written ------------------------------------------------------------

local lost = {}
if #P.shards > 0 then
  local fields = {}
  for i, shard in ipairs(P.shards) do fields[i] = int(shard) end
  local leases = redis.call('HMGET', G .. 'shards', unpack(fields))
  for i, shard in ipairs(P.shards) do
    local held = leases[i] and tonumber(string.match(leases[i], '^(%d+):'))
    if held ~= P.epoch then lost[#lost + 1] = shard end
  end
end
if #lost > 0 then return {'epoch', lost} end

local ok, conflicts = {}, {}
for i, w in ipairs(P.runs) do
  local seq = redis.call('HGET', w.tag .. 'run:' .. w.id, 'seq')
  if (seq and tonumber(seq) or 0) ~= w.exp or (not seq and not w.nr) then
    conflicts[#conflicts + 1] = w.id
  else
    ok[i] = true
  end
end

local overlay, skipped = {}, {}
for i, w in ipairs(P.runs) do
  if ok[i] then
    if w.tpl and not w.rout then return {'retry'} end
    for j, op in ipairs(w.ops or {}) do
      local found = st_check(overlay, op)
      if found == 'retry' then return {'retry'} end
      if found then skipped[#skipped + 1] = {i, j, found} end
    end
  end
end

-- Writes ---------------------------------------------------------------------------------------

local function push(fields, name, value)
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end

-- A first commit: the run's row (the spec is sent only when this store object has not seen it yet,
-- and stored once per call, however many new runs pin it).
local specs_stored = {}

local function new_run(w, rk, fields)
  local nr = w.nr
  if nr.spec and not specs_stored[nr.hash] then
    specs_stored[nr.hash] = true
    redis.call('HSETNX', G .. 'specs', nr.hash, ARGV[nr.spec])
  end
  for _, f in ipairs({'id', w.id, 'wf', nr.wf, 'spec', nr.hash, 'st', 'running', 'in', ARGV[nr['in']], 'c', NOW}) do
    fields[#fields + 1] = f
  end
  if nr.parent then push(fields, 'parent', nr.parent) end
  if not w.st then redis.call('ZADD', G .. 'runs:running', NOW, rk) end
end

-- Keeps the run in its status's index G..'runs:'..status and, once it is finished (a status other
-- than running, and a finished time), in G..'finished' by its finished time, where purge.lua takes
-- the oldest from.
local function index_run(w, rk)
  local old = w.nr and {'running', NOW, false} or redis.call('HMGET', rk, 'st', 'c', 'fin')
  if w.st then
    if old[1] ~= w.st then
      if not w.nr then redis.call('ZREM', G .. 'runs:' .. old[1], rk) end
      redis.call('ZADD', G .. 'runs:' .. w.st, old[2], rk)
    elseif w.nr then
      redis.call('ZADD', G .. 'runs:running', NOW, rk)
    end
  end
  local st, fin = w.st or old[1], w.fin or (old[3] and tonumber(old[3]))
  if st ~= 'running' and fin then
    redis.call('ZADD', G .. 'finished', int(fin), rk)
  elseif old[1] ~= 'running' and old[3] then
    redis.call('ZREM', G .. 'finished', rk)
  end
end

-- The run row also names what of the run lives under keys no other key of the run lists, so that
-- purge.lua finds it all: 'o:'..step for each step with outputs, 't:'..id for each timer it set
-- (gone once cancelled or fired), 's:'..id for each client-chosen id it remembered. Riding on the
-- row's HSET, they cost no call of their own (unless a commit names thousands).
local function children_named(w)
  local names, named = {}, {}
  for _, o in ipairs(w.outs or {}) do
    local f = 'o:' .. o[1]
    if not named[f] then
      named[f] = true
      push(names, f, '')
    end
  end
  for _, t in ipairs(w.stm or {}) do push(names, 't:' .. t[1], '') end
  for _, id in ipairs(w.seen or {}) do push(names, 's:' .. id, '') end
  return names
end

local function write_run(w)
  local rk = w.tag .. 'run:' .. w.id
  local fields = {'seq', int(w.new), 'u', NOW}
  if w.nr then new_run(w, rk, fields) end
  if w.st or w.fin then index_run(w, rk) end
  if w.st then push(fields, 'st', w.st) end
  if w.rout then  -- the run's output, rendered from its output mapping
    push(fields, 'out', ARGV[w.rout])
  elseif w.out then
    push(fields, 'out', ARGV[w.out])
  end
  if w.err then push(fields, 'err', ARGV[w.err]) end
  if w.fin then push(fields, 'fin', int(w.fin)) end
  local names = children_named(w)
  if #names <= 1000 then  -- in the row's own HSET; more go in slices (call_many), to spare Lua's stack
    for _, v in ipairs(names) do fields[#fields + 1] = v end
    names = {}
  end
  redis.call('HSET', rk, unpack(fields))
  call_many('HSET', rk, names)
  -- The history is a Stream with an entry per commit, its id the sequence number of the commit's
  -- last event (w.new): field e holds a single event, es a JSON array of several.
  if w.evn > 0 then
    redis.call('XADD', w.tag .. 'ev:' .. w.id, int(w.new), w.evn == 1 and 'e' or 'es', ARGV[w.ev])
  end
end

-- t: {key ('' for the run's own), task id, step, index, target, labels JSON or '', priority, try,
--     lease floor, timeout ('' for none), template, item, input schema (ARGV indexes; schema 0:
--     none), need (what the template reads, see lease_reads; '' when the claim must read it)};
--     index, try, lease floor and timeout come as text, ready to store.
local enqueued = {}  -- {task key, target, label set} of each task this commit makes ready

local function enqueue(w, t)
  local key = t[1] ~= '' and t[1] or (w.tag .. 'task:' .. t[2])
  local ready = t[6] == '' and (G .. 'ready:' .. t[5]) or (G .. 'readyl:' .. t[5] .. '\n' .. t[6])
  local old = not w.nr and redis.call('HGET', key, 'rq')  -- a new run has no task rows yet
  if old then  -- a task enqueued again (a retry): its row is replaced
    redis.call('ZREM', old, key)
    redis.call('ZREM', G .. 'leases', key)
    redis.call('DEL', key)
  end
  local score = int(now - t[7] * AGING_MS)
  local fields = {'id', t[2], 'run', w.id, 'tag', w.tag, 'step', t[3], 'idx', t[4], 'tgt', t[5], 'lb', t[6],
    'rq', ready, 'sc', score, 'st', 'ready', 'try', t[8], 'ln', t[9], 'tpl', ARGV[t[11]], 'item', ARGV[t[12]],
    'rms', NOW}
  if t[14] ~= '' then push(fields, 'need', t[14]) end
  if t[10] ~= '' then push(fields, 'to', t[10]) end
  if t[13] > 0 then push(fields, 'sch', ARGV[t[13]]) end
  redis.call('HSET', key, unpack(fields))
  task_ready(key, ready, score, t[5], t[6])
  redis.call('SADD', w.tag .. 'tasks:' .. w.id, key)
  enqueued[#enqueued + 1] = {key, t[5], t[6]}
end

local consumed = {}  -- {seq, shard tag, id or nil} of each inbox row this commit consumes (see inbox_consume)
local seen = {}  -- {client-chosen id, run id} to remember

local function write_children(w)
  local tasks = w.tag .. 'tasks:' .. w.id
  for _, key in ipairs(w.drop or {}) do
    task_unindex(key)
    redis.call('DEL', key)
    redis.call('SREM', tasks, key)
  end
  for _, t in ipairs(w.enq or {}) do enqueue(w, t) end
  if w.ctm then
    local set, unnamed = {}, {}
    for _, t in ipairs(w.stm or {}) do set[t[1]] = true end
    for _, id in ipairs(w.ctm) do
      redis.call('ZREM', G .. 'timers', id)
      redis.call('HDEL', G .. 'timer', id)
      if not set[id] then unnamed[#unnamed + 1] = 't:' .. id end  -- one set again stays named
    end
    call_many('HDEL', w.tag .. 'run:' .. w.id, unnamed)
  end
  for _, t in ipairs(w.stm or {}) do  -- {timer id, due ms, JSON [run, tag, kind, task id, lease no]}
    redis.call('ZADD', G .. 'timers', int(t[2]), t[1])
    redis.call('HSET', G .. 'timer', t[1], t[3])
  end
  for _, o in ipairs(w.outs or {}) do  -- {step, index, ARGV index of the output}
    redis.call('HSET', w.tag .. 'out:' .. w.id .. '/' .. o[1], int(o[2]), ARGV[o[3]])
  end
  for _, c in ipairs(w.cons or {}) do  -- a seq, or {seq, id}
    if type(c) == 'table' then
      consumed[#consumed + 1] = {c[1], w.tag, c[2]}
    else
      consumed[#consumed + 1] = {c, w.tag}
    end
  end
  for _, id in ipairs(w.seen or {}) do seen[#seen + 1] = {id, w.id} end
end

for i, w in ipairs(P.runs) do
  if ok[i] then
    write_run(w)
    write_children(w)
    for _, op in ipairs(w.ops or {}) do st_apply(op, P.keep) end
    if w.dns then drop_namespace(w.dns[1], w.dns[2]) end
  end
end
for _, seq in ipairs(P.cons or {}) do consumed[#consumed + 1] = {seq, false} end
inbox_consume(consumed, seen)

-- Grants: each task made ready above goes to a standing claim that fits, if one waits.
local ungranted = {}
for _, e in ipairs(enqueued) do
  if redis.call('HGET', e[1], 'st') == 'ready' and not grant_ready(e[1], e[2], e[3], now) then
    ungranted[e[2]] = true
  end
end

-- Claims, which see everything written above ---------------------------------------------------

local leases = {}
for i, c in ipairs(P.claims or {}) do  -- {worker, targets, labels, limit, lease ms}
  leases[i] = claim(c[1], c[2], c[3], c[4], c[5], now)
end
local reads = lease_reads(leases)
-- Hints last: subscribers get them once this script's writes are all in (Connection.carry_hints).
-- A target whose new tasks all went to standing claims needs none: the others would claim in vain.
for _, topic in ipairs(P.hints or {}) do
  if string.sub(topic, 1, 6) ~= 'ready:' or ungranted[string.sub(topic, 7)] then
    redis.call('PUBLISH', P.hp .. topic, topic)
  end
end
return {'ok', conflicts, skipped, leases, reads}
