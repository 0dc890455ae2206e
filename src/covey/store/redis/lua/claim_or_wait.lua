-- claim_or_wait: ARGV[2] worker, ARGV[3] JSON targets, ARGV[4] JSON labels, ARGV[5] limit,
-- ARGV[6] lease ms, ARGV[7] how long a standing claim stands, in ms. Leases what is ready, like
-- claim; if that is less than the limit, also leaves a standing claim (see common.lua) for the
-- rest. Returns {leases, what their inputs read, the standing claim's token or 0}.

local worker, targets, offered = ARGV[2], cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
local limit, now = tonumber(ARGV[5]), now_ms()
local leased = claim(worker, targets, offered, limit, tonumber(ARGV[6]), now)
if #leased >= limit then return {leased, lease_reads({leased}), 0} end
local token = redis.call('INCR', G .. 'waittok')
redis.call('HSET', G .. 'waiter', worker,
  cjson.encode({token = int(token), labels = offered, lease_ms = tonumber(ARGV[6]),
    ['until'] = now + tonumber(ARGV[7]), left = limit - #leased}))
for _, target in ipairs(targets) do redis.call('RPUSH', G .. 'waiting:' .. target, worker .. '|' .. int(token)) end
return {leased, lease_reads({leased}), token}
