-- snapshot: one consistent read of what Python needs to decide writes before a commit or a
-- state_apply (reducers run in Python; the write script then checks the versions read here).
-- ARGV[2] JSON {lock: [key, token], fence: [task key, lease no], runs: [run keys],
-- keys: [[tag, namespace, key]], outs: [output keys]}. Returns {lock held, fence current,
-- {seq or false, input} per run, {value or false, last version} per key, HGETALL per output key}.

local P = cjson.decode(ARGV[2])
local lock_ok = not P.lock or permit_slot(P.lock[1], P.lock[2], now_ms()) ~= nil
local fence_ok = true
if P.fence then
  local f = redis.call('HMGET', P.fence[1], 'st', 'ln')
  fence_ok = f[1] == 'leased' and tonumber(f[2]) == P.fence[2]
end
local runs, entries, outs = {}, {}, {}
for i, key in ipairs(P.runs or {}) do runs[i] = redis.call('HMGET', key, 'seq', 'in') end
for i, k in ipairs(P.keys or {}) do
  local f = redis.call('HMGET', k[1] .. 'nsdata:' .. k[2], 'v:' .. k[3], 'n:' .. k[3])
  entries[i] = {f[1], tonumber(f[2] or '0')}
end
for i, key in ipairs(P.outs or {}) do outs[i] = redis.call('HGETALL', key) end
return {lock_ok and 1 or 0, fence_ok and 1 or 0, runs, entries, outs}
