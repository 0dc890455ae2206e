-- shards: ARGV[2] 'take' or 'release', ARGV[3] epoch, ARGV[4] ttl ms, ARGV[5..] shards.
-- G..'shards' holds shard -> 'epoch:until_ms'. Take grants a shard that is free, whose lease has
-- ended, or that the epoch holds already, and returns the requested shards the epoch holds.
-- Release ends the epoch's leases of the shards now (the epoch stays on them until taken).

local epoch, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local held = {}
for i = 5, #ARGV do
  local lease = redis.call('HGET', G .. 'shards', ARGV[i])
  local owner, until_ms = -1, 0
  if lease then
    local e, u = string.match(lease, '^(%d+):(%d+)$')
    owner, until_ms = tonumber(e), tonumber(u)
  end
  if ARGV[2] == 'take' and (owner == epoch or until_ms <= now) then
    redis.call('HSET', G .. 'shards', ARGV[i], int(epoch) .. ':' .. int(now + ttl))
    owner = epoch
  elseif ARGV[2] == 'release' and owner == epoch then
    redis.call('HSET', G .. 'shards', ARGV[i], int(epoch) .. ':0')
  end
  if owner == epoch then held[#held + 1] = tonumber(ARGV[i]) end
end
return held
