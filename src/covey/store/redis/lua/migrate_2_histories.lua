-- Layout 2: a run's history becomes a Stream (entry id "<seq>-0", field e), read with XRANGE.
-- Layout 1 kept it as a list, one event per element in sequence order, so element i is seq i.
-- Runs once per prefix, from Connection._check_layout; a fresh prefix starts at the new layout.

local prefix = string.sub(G, 2, -3)  -- G is "{prefix}:"
local pattern = '{' .. string.gsub(prefix, '([%*%?%[%]\\])', '\\%1') .. ':*}:ev:*'
local cursor = '0'
repeat
  local found = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
  cursor = found[1]
  for _, key in ipairs(found[2]) do
    if redis.call('TYPE', key).ok == 'list' then
      local events = redis.call('LRANGE', key, 0, -1)
      redis.call('DEL', key)
      for i, body in ipairs(events) do redis.call('XADD', key, int(i), 'e', body) end
    end
  end
until cursor == '0'
