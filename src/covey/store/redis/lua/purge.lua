-- purge: ARGV[2] before ms, ARGV[3] limit. Deletes up to limit runs that finished before that time,
-- oldest first (ties by run id), with all that was theirs: the run row and its entries in
-- G..'runs:'..status and G..'finished', its history, its task rows and their entries in the ready
-- and lease indexes, its outputs and timers and remembered ids (which its row names, see
-- children_named in commit.lua), its inbox rows that still wait (and their ids), and its namespace
-- 'run:'..id (values, keys, change feed and its counter). Returns {the ids purged, oldest first,
-- how many entries of G..'finished' were taken}: fewer than limit means none is left to look at.
-- Reads until everything is decided, then only deletes: no command that may grow memory, so a
-- purge frees memory on a full server too. Other copies of rows and leases (pushed to waiting nodes
-- and workers) are left: they are copies, and a row or report of a run that is gone is consumed as
-- one of an unknown run.

local before, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if limit <= 0 then return {{}, 0} end
local index = G .. 'finished'

-- The oldest entries: the first `limit` by score, then, instead of those tied with the last one,
-- every entry of that score, since the index orders ties by key (the shard tag first), not run id.
local found = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. int(before), 'WITHSCORES', 'LIMIT', 0, limit)
local entries = {}
if #found > 0 then
  local last = found[#found]
  for i = 1, #found, 2 do
    if found[i + 1] ~= last then entries[#entries + 1] = {found[i], tonumber(found[i + 1])} end
  end
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', index, last, last)) do
    entries[#entries + 1] = {key, tonumber(last)}
  end
end
for _, e in ipairs(entries) do  -- a run key is its tag, 'run:', then its id
  e.tag = string.match(e[1], '^(.-}:)')
  e.id = string.sub(e[1], #e.tag + 5)
end
table.sort(entries, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a.id < b.id
end)
local taken = math.min(limit, #entries)

-- Deciding: what goes, gathered before anything is deleted ---------------------------------------

local unlink = {}  -- keys
local removals, removal_of = {}, {}  -- {command, key, members}, in order; by command and key

local function remove(cmd, key, member)
  local name = cmd .. '\n' .. key
  local r = removal_of[name]
  if not r then
    r = {cmd, key, {}}
    removal_of[name] = r
    removals[#removals + 1] = r
  end
  r[3][#r[3] + 1] = member
end

local function gather(run)
  local tag, id, rk = run.tag, run.id, run[1]
  for _, key in ipairs({rk, tag .. 'ev:' .. id, tag .. 'tasks:' .. id}) do unlink[#unlink + 1] = key end
  for _, key in ipairs(namespace_keys(tag, 'run:' .. id)) do unlink[#unlink + 1] = key end
  remove('ZREM', G .. 'runs:' .. run.st, rk)
  remove('ZREM', index, rk)
  for _, key in ipairs(redis.call('SMEMBERS', tag .. 'tasks:' .. id)) do
    local ready = redis.call('HGET', key, 'rq')
    if ready then remove('ZREM', ready, key) end
    remove('ZREM', G .. 'leases', key)
    unlink[#unlink + 1] = key
  end
  for _, field in ipairs(redis.call('HKEYS', rk)) do
    local kind, name = string.sub(field, 1, 2), string.sub(field, 3)
    if kind == 'o:' then
      unlink[#unlink + 1] = tag .. 'out:' .. id .. '/' .. name
    elseif kind == 't:' then  -- unless set again since by another run
      local data = redis.call('HGET', G .. 'timer', name)
      if not data or cjson.decode(data)[1] == id then
        remove('ZREM', G .. 'timers', name)
        remove('HDEL', G .. 'timer', name)
      end
    elseif kind == 's:' then  -- unless another run remembered it first
      if redis.call('HGET', G .. 'seen', name) == id then remove('HDEL', G .. 'seen', name) end
    end
  end
end

-- The rows still waiting in the inbox of the purged runs of one shard: its index holds their ids
-- by seq, and a row's member starts with its tag, seq, id and run id (inbox_member in common.lua).
local function gather_inbox(tag, runs)
  local rows = redis.call('ZRANGE', tag .. 'inbox', 0, -1, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local row_id, seq = rows[i], int(tonumber(rows[i + 1]))
    local member = redis.call('ZRANGEBYSCORE', G .. 'inbox', seq, seq)[1]
    local head = tag .. '[' .. seq .. ',' .. cjson.encode(row_id) .. ','
    if member and string.sub(member, 1, #head) == head then
      for _, run in ipairs(runs) do
        local of = cjson.encode(run.id) .. ','
        if string.sub(member, #head + 1, #head + #of) == of then
          remove('ZREM', G .. 'inbox', member)
          remove('ZREM', tag .. 'inbox', row_id)
          if redis.call('HGET', G .. 'seen', row_id) == '' then remove('HDEL', G .. 'seen', row_id) end
          break
        end
      end
    end
  end
end

local purged, by_tag, tags = {}, {}, {}
for i = 1, taken do
  local run = entries[i]
  local f = redis.call('HMGET', run[1], 'st', 'fin')
  if f[1] and f[1] ~= 'running' and f[2] then
    run.st = f[1]
    gather(run)
    purged[#purged + 1] = run.id
    if not by_tag[run.tag] then
      by_tag[run.tag] = {}
      tags[#tags + 1] = run.tag
    end
    table.insert(by_tag[run.tag], run)
  else  -- not a finished run (any more): it leaves the index, and nothing else
    remove('ZREM', index, run[1])
  end
end
for _, tag in ipairs(tags) do gather_inbox(tag, by_tag[tag]) end

-- Deleting -------------------------------------------------------------------------------------

for i = 1, #unlink, 1000 do redis.call('UNLINK', unpack(unlink, i, math.min(i + 999, #unlink))) end
for _, r in ipairs(removals) do call_many(r[1], r[2], r[3]) end
return {purged, taken}
