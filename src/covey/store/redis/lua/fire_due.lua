-- fire_due: ARGV[2] limit. Deletes up to limit due timers and ends up to limit leases whose
-- deadline passed, appending a TimerFired inbox row for each; returns how many fired. A lease whose
-- report waits in the inbox is not ended: its deadline moves on by REPORTED_LEASE_MS.

local REPORTED_LEASE_MS = 3000

local limit = tonumber(ARGV[2])
local now = now_ms()
local fired = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', G .. 'timers', '-inf', int(now), 'LIMIT', 0, limit)) do
  local data = redis.call('HGET', G .. 'timer', id)
  redis.call('ZREM', G .. 'timers', id)
  redis.call('HDEL', G .. 'timer', id)
  if data then
    local t = cjson.decode(data)  -- [run id, shard tag, kind, task id or null, lease no]
    redis.call('HDEL', t[2] .. 'run:' .. t[1], 't:' .. id)  -- its run's row names it no more
    local task = t[4] ~= cjson.null and t[4] or nil
    inbox_add('timer:' .. id, t[1], t[2], timer_fired(id, t[3], now, task, t[5]), nil, nil)
    fired = fired + 1
  end
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', G .. 'leases', '-inf', int(now), 'LIMIT', 0, limit)) do
  local f = redis.call('HMGET', key, 'id', 'run', 'tag', 'ln', 'lu', 'dl')
  if redis.call('HEXISTS', G .. 'seen', 'report:' .. f[1] .. ':' .. f[4]) == 1 then
    -- Its report waits in the inbox (the id as covey.store.base.report_row_id spells it), behind a
    -- backlog: it is decided before any end of the lease appended now, which would only be stale.
    -- Looked at again later, in case that row goes without a decision.
    redis.call('ZADD', G .. 'leases', int(now + REPORTED_LEASE_MS), key)
    redis.call('HSET', key, 'lu', int(now + REPORTED_LEASE_MS))
  else
    redis.call('ZREM', G .. 'leases', key)
    redis.call('HSET', key, 'st', 'expired')
    local kind = (f[6] and tonumber(f[5]) >= tonumber(f[6])) and 'try_timeout' or 'lease_expired'
    local id = 'lease:' .. f[1] .. ':' .. f[4]
    inbox_add(id, f[2], f[3], timer_fired(id, kind, now, f[1], tonumber(f[4])), nil, nil)
    fired = fired + 1
  end
end
return fired
