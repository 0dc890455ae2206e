-- heartbeat: ARGV[2] worker, ARGV[3] lease ms, then (task key, task id, lease no) triples.
-- Extends the leases the worker still holds, never past a try's deadline; returns the others' ids.

local worker = ARGV[2]
local now = now_ms()
local until_ms = now + tonumber(ARGV[3])
local lost = {}
for i = 4, #ARGV, 3 do
  local key = ARGV[i]
  local f = redis.call('HMGET', key, 'st', 'ln', 'w', 'dl')
  if f[1] == 'leased' and f[2] == ARGV[i + 2] and f[3] == worker then
    local extended = until_ms
    if f[4] then extended = math.min(extended, tonumber(f[4])) end
    redis.call('HSET', key, 'lu', int(extended))
    redis.call('ZADD', G .. 'leases', int(extended), key)
  else
    lost[#lost + 1] = ARGV[i + 1]
  end
end
if redis.call('HEXISTS', G .. 'workers', worker) == 1 then
  redis.call('HSET', G .. 'workers:hb', worker, int(now))
end
return lost
