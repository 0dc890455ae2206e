-- Layout 3: an inbox row is a member of the inbox sorted sets, no longer a hash of its own.
-- Layout 2 kept row <seq> in the hash tag..'in:'..seq (fields id, run, ev, out, ops, z: its shard's
-- index), with that key as the member of G..'inbox' and of the shard's tag..'inbox'. Each becomes
-- inbox_member in G..'inbox' and its id in tag..'inbox', at the same seq. Copies pushed to waiting
-- nodes (G..'inq:*') were in the old shape and are dropped: their rows are read from the inbox.
-- Runs once per prefix, from Connection._check_layout; a fresh prefix starts at the new layout.

for _, key in ipairs(redis.call('ZRANGE', G .. 'inbox', 0, -1)) do
  local score = redis.call('ZSCORE', G .. 'inbox', key)
  local f = redis.call('HMGET', key, 'id', 'run', 'ev', 'out', 'ops', 'z')
  redis.call('ZREM', G .. 'inbox', key)
  if f[6] then redis.call('ZREM', f[6], key) end
  redis.call('DEL', key)
  if f[1] then
    local tag = string.match(key, '^(.-}:)')
    local seq = tonumber(score)
    redis.call('ZADD', G .. 'inbox', int(seq), inbox_member(seq, f[1], f[2], tag, f[3], f[4], f[5]))
    redis.call('ZADD', tag .. 'inbox', int(seq), f[1])
  end
end

local prefix = string.sub(G, 2, -3)  -- G is "{prefix}:"
local pattern = '{' .. string.gsub(prefix, '([%*%?%[%]\\])', '\\%1') .. '}:inq:*'
local cursor = '0'
repeat
  local found = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
  cursor = found[1]
  for _, key in ipairs(found[2]) do redis.call('DEL', key) end
until cursor == '0'
