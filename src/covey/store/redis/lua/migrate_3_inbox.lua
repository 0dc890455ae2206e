-- Layout 3: an inbox row is a member of the inbox sorted sets, no longer a hash of its own.
-- Layout 2 kept row <seq> in the hash tag..'in:'..seq (fields id, run, ev, out, ops, z: its shard's
-- index), with that key as the member of G..'inbox' and of the shard's tag..'inbox'. Each becomes
-- its member in G..'inbox' and its id in tag..'inbox', at the same seq. Copies pushed to waiting
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
    -- The member as layout 3 writes it (inbox_member in common.lua at that version), spelled out
    -- here so a later change of that function cannot change what this step writes.
    local member = tag .. '[' .. int(seq) .. ',' .. cjson.encode(f[1]) .. ',' .. cjson.encode(f[2]) .. ',' .. f[3]
      .. ',' .. (f[4] and cjson.encode(f[4]) or 'false') .. ',' .. (f[5] and cjson.encode(f[5]) or 'false') .. ']'
    redis.call('ZADD', G .. 'inbox', int(seq), member)
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
