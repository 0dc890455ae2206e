-- covey's Redis store: helpers every script shares. This text is put in front of each script
-- when it is loaded (EVAL scripts cannot share functions), so a script sees these locals.
--
-- ARGV[1] is always the prefix of the keys of no shard ("{covey}:"). Keys of a shard are built
-- from their tag ("{covey:17}:"), which Python computes (the shard is a CRC-32 of the run id) and
-- passes along. Numbers are written with int(), never left to Lua's number formatting.
-- Every script checks everything first and writes only after: Redis does not roll a script back.

local G = ARGV[1]
local EVENT_V = '@EVENT_V@'
local AGING_MS = @AGING_MS@
local INQ_TTL_MS = 10000  -- a node's pushed-rows list goes this long after its last push
local GRANT_LEASE_MS = 3000  -- a granted lease lasts this long until its worker confirms it

local function int(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Calls cmd key ...args in slices, so a long argument list never overflows Lua's stack.
local function call_many(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- The inbox ------------------------------------------------------------------------------------

-- A row is one member of two sorted sets, both scored by its seq: G..'inbox' holds the row itself
-- (inbox_member: its shard tag, then the JSON array [seq, id, run id, event, output, state ops]),
-- and its shard's tag..'inbox' holds its id. No key per row: appending one is a ZADD to each set,
-- consuming one a removal from each (see inbox_consume). The event is JSON that covey wrote, so it
-- goes in as it is; an output and state writes go in as JSON strings (false when missing), kept
-- byte for byte.
local function inbox_member(seq, id, run, tag, event, output, ops)
  return tag .. '[' .. int(seq) .. ',' .. cjson.encode(id) .. ',' .. cjson.encode(run) .. ',' .. event .. ','
    .. (output and cjson.encode(output) or 'false') .. ',' .. (ops and cjson.encode(ops) or 'false') .. ']'
end

-- Sequence numbers for new inbox rows, taken from G..'inbox:seq' in one INCRBY per block:
-- inbox_reserve(n) before appending up to n rows saves a call per row. A number reserved and not
-- used (a duplicate row) leaves a gap; seqs only need to grow in the order rows are appended.
local seq_next, seq_last = 1, 0

local function inbox_reserve(n)
  seq_last = redis.call('INCRBY', G .. 'inbox:seq', n)
  seq_next = seq_last - n + 1
end

-- Appends a row unless its id is known. G..'seen' knows every id that may not come again: ''
-- for a row that waits in the inbox, the run id for a client-chosen id once committed (see
-- inbox_consume), so one HSETNX both checks and claims the id. Returns its seq and member, or nil.
local function inbox_add(id, run, tag, event, output, ops)
  if redis.call('HSETNX', G .. 'seen', id, '') == 0 then return nil end
  if seq_next > seq_last then inbox_reserve(1) end
  local seq = seq_next
  seq_next = seq_next + 1
  local member = inbox_member(seq, id, run, tag, event, output, ops)
  redis.call('ZADD', G .. 'inbox', int(seq), member)
  redis.call('ZADD', tag .. 'inbox', int(seq), id)
  return seq, member
end

-- Hands a new inbox row to the engine node that holds its shard, if that node is waiting for rows
-- (G..'inwait:'..epoch exists while it is): a copy of its member pushed on G..'inq:'..epoch, which
-- the node pops (BLMPOP) instead of reading the inbox. The row itself stays in the inbox until a
-- commit consumes it; a copy nobody pops expires with its list. True if pushed. Who waits for which
-- shard is looked up once per script call (push_to), as a call appends rows of many runs.
local push_to = {}  -- shard tag -> the queue of the node waiting for its rows, or false
local push_armed = {}  -- queue -> true once its expiry was set in this call

local function inbox_queue(tag)
  local shard = string.match(tag, ':(%d+)}:$')
  local lease = shard and redis.call('HGET', G .. 'shards', shard)
  local epoch = lease and string.match(lease, '^(%d+):')
  if not epoch or redis.call('EXISTS', G .. 'inwait:' .. epoch) == 0 then return false end
  return G .. 'inq:' .. epoch
end

local function inbox_push(tag, member)
  local queue = push_to[tag]
  if queue == nil then
    queue = inbox_queue(tag)
    push_to[tag] = queue
  end
  if not queue then return false end
  redis.call('RPUSH', queue, member)
  if not push_armed[queue] then
    push_armed[queue] = true
    redis.call('PEXPIRE', queue, INQ_TTL_MS)
  end
  return true
end

-- Consumes inbox rows: rows is a list of {seq, shard tag or false, id or nil}, the rows that are
-- gone already skipped. A row's id is what the caller read with it when it has it (the removal from
-- its shard's index then says whether the row is still there); else one lookup away by its tag;
-- for rows consumed without a decision, tag and id are read from the member. The removals from the
-- global index are batched, one call per run of consecutive seqs, and the ids leave G..'seen' in
-- one call. Then the client-chosen ids to remember (seen: {id, run id}) are written: the first
-- commit of an id keeps it, whether or not a row of it waits.
local function inbox_consume(rows, seen)
  local seqs, ids, by_tag = {}, {}, {}
  for _, row in ipairs(rows) do
    local score, tag, id = int(row[1]), row[2], row[3]
    if id then
      if redis.call('ZREM', tag .. 'inbox', id) == 0 then id = nil end
    else
      id = tag and redis.call('ZRANGEBYSCORE', tag .. 'inbox', score, score)[1]
      if not id then
        local member = redis.call('ZRANGEBYSCORE', G .. 'inbox', score, score)[1]
        if member then
          tag = string.match(member, '^(.-}:)')
          id = cjson.decode(string.sub(member, #tag + 1))[2]
        end
      end
      if id then
        local shard = by_tag[tag]
        if not shard then
          shard = {}
          by_tag[tag] = shard
        end
        shard[#shard + 1] = id
      end
    end
    if id then
      seqs[#seqs + 1] = tonumber(row[1])
      ids[#ids + 1] = id
    end
  end
  if #seqs > 0 then
    table.sort(seqs)
    local first = seqs[1]
    for i = 2, #seqs + 1 do
      if i > #seqs or seqs[i] ~= seqs[i - 1] + 1 then
        redis.call('ZREMRANGEBYSCORE', G .. 'inbox', int(first), int(seqs[i - 1]))
        first = seqs[i]
      end
    end
    for tag, shard in pairs(by_tag) do call_many('ZREM', tag .. 'inbox', shard) end
    -- An id stays known if it was committed as seen meanwhile (by a commit that had no row of it).
    local waiting = {}
    for i = 1, #ids, 1000 do
      local last = math.min(i + 999, #ids)
      local found = redis.call('HMGET', G .. 'seen', unpack(ids, i, last))
      for j = i, last do
        if found[j - i + 1] == '' then waiting[#waiting + 1] = ids[j] end
      end
    end
    call_many('HDEL', G .. 'seen', waiting)
  end
  for _, s in ipairs(seen or {}) do
    local known = redis.call('HGET', G .. 'seen', s[1])
    if not known or known == '' then redis.call('HSET', G .. 'seen', s[1], s[2]) end
  end
end

-- A TimerFired event as covey.engine.events.event_to_json writes it.
local function timer_fired(timer_id, kind, at, task_id, lease_no)
  return '{"timer_id":' .. cjson.encode(timer_id) .. ',"kind":' .. cjson.encode(kind)
    .. ',"at_ms":' .. int(at) .. ',"task_id":' .. (task_id and cjson.encode(task_id) or 'null')
    .. ',"lease_no":' .. int(lease_no) .. ',"type":"TimerFired","v":' .. EVENT_V .. '}'
end

-- Tasks ----------------------------------------------------------------------------------------

-- Puts a task back into its ready set (and its label set into the target's list of them).
local function task_ready(key, ready_key, score, target, labels)
  redis.call('ZADD', ready_key, score, key)
  if labels and labels ~= '' then redis.call('SADD', G .. 'labelsets:' .. target, labels) end
end

-- Takes a task out of the ready and lease indexes (the row itself stays).
local function task_unindex(key)
  local ready_key = redis.call('HGET', key, 'rq')
  if ready_key then redis.call('ZREM', ready_key, key) end
  redis.call('ZREM', G .. 'leases', key)
end

local function label_fits(set, offered)
  for name, value in pairs(cjson.decode(set)) do
    if offered[name] ~= value then return false end
  end
  return true
end

-- The ready sets a claim may take from: each target's tasks that need no label, and those of its
-- label sets the worker offers every label of. Label sets left empty are forgotten here.
local function claim_sources(targets, offered)
  local keys = {}
  for _, target in ipairs(targets) do
    keys[#keys + 1] = G .. 'ready:' .. target
    local sets_key = G .. 'labelsets:' .. target
    for _, set in ipairs(redis.call('SMEMBERS', sets_key)) do
      local key = G .. 'readyl:' .. target .. '\n' .. set
      if redis.call('EXISTS', key) == 0 then
        redis.call('SREM', sets_key, set)
      elseif label_fits(set, offered) then
        keys[#keys + 1] = key
      end
    end
  end
  return keys
end

local LEASE_FIELDS = {'id', 'run', 'step', 'idx', 'tgt', 'ln', 'try', 'tpl', 'item', 'sch', 'to', 'need', 'tag'}

-- Leases one ready task; returns what Python needs to build the Lease. Its input is rendered in
-- Python, from what lease_reads returns along (or, for a task with no 'need', from a read after).
local function lease(key, worker, lease_ms, now)
  local f = redis.call('HMGET', key, unpack(LEASE_FIELDS))
  local no = tonumber(f[6]) + 1
  local timeout = f[11] and tonumber(f[11])
  local until_ms = now + lease_ms
  local fields = {'st', 'leased', 'ln', int(no), 'w', worker}
  if timeout and timeout > 0 then  -- a try deadline: no lease or heartbeat goes past it
    until_ms = math.min(until_ms, now + timeout)
    fields[#fields + 1] = 'dl'; fields[#fields + 1] = int(now + timeout)
  end
  fields[#fields + 1] = 'lu'; fields[#fields + 1] = int(until_ms)
  redis.call('HSET', key, unpack(fields))
  redis.call('ZADD', G .. 'leases', int(until_ms), key)
  return {f[1], f[2], f[3], tonumber(f[4]), f[5], no, tonumber(f[7]), f[8], f[9], f[10], timeout or false,
    until_ms, f[12] or false, f[13] or false}
end

-- What the leased tasks' input mappings read, each once: {'i', run, input JSON} for a run's input
-- and {'o', run, step, flat HGETALL} for a step's output. A task's 'need' ([reads the run input
-- (0/1), step, ...], set at enqueue) says what; saving the worker a second round trip per claim.
local function lease_reads(lists)
  local reads, seen = {}, {}
  for _, leased in ipairs(lists) do
    for _, row in ipairs(leased) do
      local need, tag, run = row[13], row[14], row[2]
      if need and tag then
        need = cjson.decode(need)
        if need[1] == 1 and not seen['i\n' .. run] then
          seen['i\n' .. run] = true
          reads[#reads + 1] = {'i', run, redis.call('HGET', tag .. 'run:' .. run, 'in') or false}
        end
        for i = 2, #need do
          local key = tag .. 'out:' .. run .. '/' .. need[i]
          if not seen[key] then
            seen[key] = true
            reads[#reads + 1] = {'o', run, need[i], redis.call('HGETALL', key)}
          end
        end
      end
    end
  end
  return reads
end

-- Leases up to limit ready tasks: lowest score first (priority with aging, then age), ties by key.
-- The first `limit` of each source hold the first `limit` of all of them, so merging those suffices.
local function claim(worker, targets, offered, limit, lease_ms, now)
  if limit <= 0 or #targets == 0 then return {} end
  local found = {}
  for _, source in ipairs(claim_sources(targets, offered)) do
    local r = redis.call('ZRANGE', source, 0, limit - 1, 'WITHSCORES')
    for i = 1, #r, 2 do found[#found + 1] = {r[i], tonumber(r[i + 1]), source} end
  end
  table.sort(found, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[1] < b[1]
  end)
  local leases = {}
  for i = 1, math.min(limit, #found) do
    redis.call('ZREM', found[i][3], found[i][1])
    leases[i] = lease(found[i][1], worker, lease_ms, now)
  end
  return leases
end

-- Standing claims ------------------------------------------------------------------------------
-- A worker with free slots that found too little to claim leaves a standing claim and blocks on
-- its own list G..'grant:'..worker (BLMPOP). The claim is the hash field G..'waiter' worker ->
-- JSON {token, labels, lease_ms, until, left}; its 'worker|token' entry waits on
-- G..'waiting:'..target for each target it serves. A task made ready (by a commit or a release)
-- goes to the first standing claim that fits, in the same script: leased, and its lease (inputs
-- included) pushed on that worker's list. One worker wakes, with its task in hand. A claim stands
-- for `left` tasks (its worker's free slots), its entry going to the back of the line after each,
-- until used up or withdrawn by the worker (unwait) when its wait ends; the entries of used,
-- withdrawn or expired claims are dropped when met. The lists only carry copies: the lease is in
-- the task row.

-- A lease row as grant JSON: every number as text, so no precision is left to cjson.
local function grant_json(row, reads)
  local r = {row[1], row[2], row[3], int(row[4]), row[5], int(row[6]), int(row[7]), row[8], row[9], row[10],
    row[11] and int(row[11]) or false, int(row[12]), row[13], row[14]}
  return cjson.encode({r, reads})
end

local no_waiters = {}  -- targets whose waiting list this script found empty

-- Leases the ready task `key` to the first standing claim on `target` that fits; true if one did.
local function grant_ready(key, target, labels, now)
  if no_waiters[target] then return false end
  local list = G .. 'waiting:' .. target
  local unfit = {}
  local granted = false
  while true do
    local entry = redis.call('LPOP', list)
    if not entry then
      if #unfit == 0 then no_waiters[target] = true end
      break
    end
    local worker, token = string.match(entry, '^(.*)|(%d+)$')
    local body = worker and redis.call('HGET', G .. 'waiter', worker)
    local w = body and cjson.decode(body)
    if w and int(w.token) == token and w['until'] >= now then
      if labels and labels ~= '' and not label_fits(labels, w.labels) then
        unfit[#unfit + 1] = entry
      else
        local ready_key = redis.call('HGET', key, 'rq')
        if ready_key then redis.call('ZREM', ready_key, key) end
        -- A short lease until the worker confirms it (it does at once, off the hand-off): a worker that
        -- died while it waited must not sit on the task for a whole lease.
        local row = lease(key, worker, math.min(w.lease_ms, GRANT_LEASE_MS), now)
        redis.call('RPUSH', G .. 'grant:' .. worker, grant_json(row, lease_reads({{row}})))
        w.left = w.left - 1
        if w.left > 0 then  -- it stands on, for its other free slots, behind the claims that waited longer
          redis.call('HSET', G .. 'waiter', worker, cjson.encode(w))
          redis.call('RPUSH', list, entry)
        else
          redis.call('HDEL', G .. 'waiter', worker)
        end
        granted = true
        break
      end
    end
  end
  for i = #unfit, 1, -1 do redis.call('LPUSH', list, unfit[i]) end
  return granted
end

-- Shared state ---------------------------------------------------------------------------------
-- A namespace N under tag T: T..'nsdata:'..N holds 'v:'..key (the value's JSON, absent once
-- deleted) and 'n:'..key (the key's last version, kept across deletes); T..'nskeys:'..N the
-- existing keys (score 0, so in byte order); T..'nsfeed:'..N the change feed (entry id seq-0),
-- numbered by T..'nsseq:'..N. A feed keeps its last `keep` changes (Store.feed_keep, sent by Python
-- with each call, as it may change on an open store): each XADD trims it exactly (MAXLEN without ~,
-- which would only drop whole stream nodes, up to a hundred changes late). Trimming one change per
-- add costs little, and a feed that a larger `keep` let grow is cut down by its next add.
--
-- A write is {kind, tag, namespace, key, ARGV index of the new value or 0, number}. Kinds 'put'
-- and 'del' are evaluated here, the number being their if_version (-1: none). The others were
-- decided in Python from a read of version `number`, which must still be the key's: 'set' writes
-- the value, 'unset' deletes the key, 'skip' writes nothing (a delete of a missing key, or a write
-- Python refused), 'ask' means Python could not decide (the run was expected to conflict).

local function st_entry(ov, op)
  local id = op[2] .. op[3] .. '\n' .. op[4]
  local e = ov[id]
  if not e then
    local f = redis.call('HMGET', op[2] .. 'nsdata:' .. op[3], 'v:' .. op[4], 'n:' .. op[4])
    e = {exists = f[1] ~= false, last = tonumber(f[2] or '0')}
    ov[id] = e
  end
  return e
end

-- Checks one write against the overlay ov of the writes before it and notes its effect (op.act,
-- op.v). Returns nil when it fits, 'retry' when Python decided it from a version that has moved
-- since, or the key's current version when the if_version of a put or del does not match it.
local function st_check(ov, op)
  local kind, num = op[1], op[6]
  local e = st_entry(ov, op)
  op.v = 0
  if kind == 'put' or kind == 'del' then
    local current = e.exists and e.last or 0
    if num >= 0 and num ~= current then return current end
    if kind == 'del' and not e.exists then return nil end
    kind, num = (kind == 'put') and 'set' or 'unset', e.last
  end
  if kind == 'ask' or e.last ~= num then return 'retry' end
  if kind == 'skip' then return nil end
  e.last = e.last + 1
  e.exists = kind == 'set'
  op.act, op.v = kind, e.last
  return nil
end

-- Applies a write st_check accepted, and appends it to the namespace's change feed, which then
-- keeps its last `keep` changes.
local function st_apply(op, keep)
  if not op.act then return end
  local tag, ns, key = op[2], op[3], op[4]
  local data, keys = tag .. 'nsdata:' .. ns, tag .. 'nskeys:' .. ns
  local feed = tag .. 'nsfeed:' .. ns
  local seq = int(redis.call('INCR', tag .. 'nsseq:' .. ns)) .. '-0'
  if op.act == 'set' then
    local body = ARGV[op[5]]
    redis.call('HSET', data, 'v:' .. key, body, 'n:' .. key, int(op.v))
    redis.call('ZADD', keys, 0, key)
    redis.call('XADD', feed, 'MAXLEN', int(keep), seq, 'k', key, 'n', int(op.v), 'v', body)
  else
    redis.call('HDEL', data, 'v:' .. key)
    redis.call('HSET', data, 'n:' .. key, int(op.v))
    redis.call('ZREM', keys, key)
    redis.call('XADD', feed, 'MAXLEN', int(keep), seq, 'k', key, 'n', int(op.v))
  end
end

-- Every key of a namespace: its values, its keys in order, its change feed and the feed's counter.
local function namespace_keys(tag, ns)
  return {tag .. 'nsdata:' .. ns, tag .. 'nskeys:' .. ns, tag .. 'nsfeed:' .. ns, tag .. 'nsseq:' .. ns}
end

local function drop_namespace(tag, ns)
  redis.call('DEL', unpack(namespace_keys(tag, ns)))
end

-- Locks ----------------------------------------------------------------------------------------
-- G..'lock:'..name holds permit slot -> 'token|expires_ms|hHOLDER' ('token|expires_ms|' once given back).

local function permit(value)
  local token, expires, holder = string.match(value, '^(%d+)|(%d+)|(.*)$')
  return tonumber(token), tonumber(expires), holder ~= ''
end

-- The slot whose permit `token` is, when it is held (and, with now, has not expired).
local function permit_slot(key, token, now)
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local t, expires, held = permit(all[i + 1])
    if t == token and held and (not now or expires > now) then return all[i] end
  end
  return nil
end
