-- begin_epoch: ARGV[2] number of shards, ARGV[3] a lease end that never comes. A new epoch takes
-- every shard, and every lease granted before is void: reported to its run, its task expired.

local epoch = redis.call('HINCRBY', G .. 'meta', 'epoch', 1)
local now = now_ms()
local shards = {}
for shard = 0, tonumber(ARGV[2]) - 1 do
  shards[#shards + 1] = int(shard)
  shards[#shards + 1] = int(epoch) .. ':' .. ARGV[3]
end
call_many('HSET', G .. 'shards', shards)
for _, key in ipairs(redis.call('ZRANGE', G .. 'leases', 0, -1)) do
  local f = redis.call('HMGET', key, 'id', 'run', 'tag', 'ln')
  redis.call('HSET', key, 'st', 'expired')
  local row = 'void:' .. f[1] .. ':' .. f[4] .. ':' .. int(epoch)
  inbox_add(row, f[2], f[3], timer_fired('void:' .. f[1], 'lease_voided', now, f[1], tonumber(f[4])), nil, nil)
end
redis.call('DEL', G .. 'leases')
return epoch
