-- locks: ARGV[2] 'acquire' (ARGV[3] name, ARGV[4] holder, ARGV[5] limit, ARGV[6] ttl ms; returns
-- the fencing token or false), 'release' (ARGV[3] name, ARGV[4] token; 1 or 0) or 'renew' (ARGV[3]
-- name, ARGV[4] token, ARGV[5] ttl ms; 1 or 0). Tokens come from one counter per name: they only grow.

local op, key = ARGV[2], G .. 'lock:' .. ARGV[3]
local now = now_ms()
if op == 'acquire' then
  local limit, held = tonumber(ARGV[5]), {}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local _, expires, holding = permit(all[i + 1])
    if holding and expires > now then held[tonumber(all[i])] = true end
  end
  for slot = 0, limit - 1 do
    if not held[slot] then
      local token = redis.call('INCR', G .. 'locktok:' .. ARGV[3])
      redis.call('HSET', key, int(slot), int(token) .. '|' .. int(now + tonumber(ARGV[6])) .. '|h' .. ARGV[4])
      return token
    end
  end
  return false
end
local token = tonumber(ARGV[4])
if op == 'release' then
  local slot = permit_slot(key, token, nil)
  if not slot then return 0 end
  local _, expires = permit(redis.call('HGET', key, slot))
  redis.call('HSET', key, slot, int(token) .. '|' .. int(expires) .. '|')
  return 1
end
local slot = permit_slot(key, token, now)
if not slot then return 0 end
local holder = string.match(redis.call('HGET', key, slot), '^%d+|%d+|(.*)$')
redis.call('HSET', key, slot, int(token) .. '|' .. int(now + tonumber(ARGV[5])) .. '|' .. holder)
return 1
