-- release: ARGV[2] worker, then (task key, lease no) pairs. Leases the worker holds are given
-- back: the tasks are ready again, at their old place in the queue, their lease numbers kept,
-- or go straight to a standing claim (see common.lua).

local now = now_ms()
for i = 3, #ARGV, 2 do
  local key = ARGV[i]
  local f = redis.call('HMGET', key, 'st', 'ln', 'w', 'rq', 'sc', 'tgt', 'lb')
  if f[1] == 'leased' and f[2] == ARGV[i + 1] and f[3] == ARGV[2] then
    redis.call('HSET', key, 'st', 'ready')
    redis.call('HDEL', key, 'w', 'lu', 'dl')
    redis.call('ZREM', G .. 'leases', key)
    task_ready(key, f[4], f[5], f[6], f[7])
    grant_ready(key, f[6], f[7], now)  -- to a worker waiting for one, if any
  end
end
return 0
