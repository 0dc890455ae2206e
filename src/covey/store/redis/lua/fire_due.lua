-- fire_due: ARGV[2] limit. Deletes up to limit due timers and ends up to limit leases whose
-- deadline passed, appending a TimerFired inbox row for each; returns how many fired.

local limit = tonumber(ARGV[2])
local now = now_ms()
local fired = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', G .. 'timers', '-inf', int(now), 'LIMIT', 0, limit)) do
  local data = redis.call('HGET', G .. 'timer', id)
  redis.call('ZREM', G .. 'timers', id)
  redis.call('HDEL', G .. 'timer', id)
  if data then
    local t = cjson.decode(data)  -- [run id, shard tag, kind, task id or null, lease no]
    local task = t[4] ~= cjson.null and t[4] or nil
    inbox_add('timer:' .. id, t[1], t[2], timer_fired(id, t[3], now, task, t[5]), nil, nil)
    fired = fired + 1
  end
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', G .. 'leases', '-inf', int(now), 'LIMIT', 0, limit)) do
  local f = redis.call('HMGET', key, 'id', 'run', 'tag', 'ln', 'lu', 'dl')
  redis.call('ZREM', G .. 'leases', key)
  redis.call('HSET', key, 'st', 'expired')
  local kind = (f[6] and tonumber(f[5]) >= tonumber(f[6])) and 'try_timeout' or 'lease_expired'
  local id = 'lease:' .. f[1] .. ':' .. f[4]
  inbox_add(id, f[2], f[3], timer_fired(id, kind, now, f[1], tonumber(f[4])), nil, nil)
  fired = fired + 1
end
return fired
