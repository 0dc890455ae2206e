-- state_apply: ARGV[2] JSON {ops, keep: the changes each feed keeps, fence: [task key, lease no],
-- lock: [lock key, token]}; all or nothing.
-- Returns {'stale', 'lock'|'fence'}, {'retry'}, {'conflict', write number, current version} or
-- {'ok', versions}.

local P = cjson.decode(ARGV[2])
if P.lock and not permit_slot(P.lock[1], P.lock[2], now_ms()) then return {'stale', 'lock'} end
if P.fence then
  local f = redis.call('HMGET', P.fence[1], 'st', 'ln')
  if f[1] ~= 'leased' or tonumber(f[2]) ~= P.fence[2] then return {'stale', 'fence'} end
end
local overlay = {}
for i, op in ipairs(P.ops) do
  local found = st_check(overlay, op)
  if found == 'retry' then return {'retry'} end
  if found then return {'conflict', i, found} end
end
local versions = {}
for i, op in ipairs(P.ops) do
  st_apply(op, P.keep)
  versions[i] = op.v
end
return {'ok', versions}
