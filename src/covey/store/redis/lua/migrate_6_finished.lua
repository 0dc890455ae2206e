-- Layout 6: finished runs are indexed by their finished time (G..'finished'), and a run's row names
-- its output steps ('o:'..step), its timers ('t:'..timer id) and the client-chosen ids it
-- remembered ('s:'..id), so that purge_finished finds all of a run without a scan. Layout 5 had
-- none of these; this step builds them from what is there: the finished runs from the status
-- indexes, the output steps from a scan of the prefix's output keys, the timers from G..'timer',
-- the remembered ids from G..'seen' (which names a run by its id only: its shard is computed here,
-- as covey.store.base.shard_of does in Python, CRC-32 of the id modulo 256 shards).
-- Runs once per prefix, from Connection._check_layout; a fresh prefix starts at the new layout.

local prefix = string.sub(G, 2, -3)  -- G is "{prefix}:"

-- Finished runs, from the indexes of the statuses covey writes other than 'running'.
for _, status in ipairs({'succeeded', 'failed', 'cancelled'}) do
  local runs = G .. 'runs:' .. status
  local n = redis.call('ZCARD', runs)
  for first = 0, n - 1, 1000 do
    for _, key in ipairs(redis.call('ZRANGE', runs, first, first + 999)) do
      local fin = redis.call('HGET', key, 'fin')
      if fin then redis.call('ZADD', G .. 'finished', fin, key) end
    end
  end
end

-- A run's row gets a field that names something of it, if the run is there.
local function name(run_key, field)
  if redis.call('EXISTS', run_key) == 1 then redis.call('HSET', run_key, field, '') end
end

-- Output steps: each key tag..'out:'..run..'/'..step (run ids hold no '/').
local pattern = '{' .. string.gsub(prefix, '([%*%?%[%]\\])', '\\%1') .. ':*}:out:*'
local cursor = '0'
repeat
  local found = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
  cursor = found[1]
  for _, key in ipairs(found[2]) do
    local tag = string.match(key, '^(.-}:)')
    if tag and string.sub(key, #tag + 1, #tag + 4) == 'out:' then
      local run, step = string.match(string.sub(key, #tag + 5), '^([^/]*)/(.*)$')
      if run then name(tag .. 'run:' .. run, 'o:' .. step) end
    end
  end
until cursor == '0'

-- Timers: G..'timer' holds id -> JSON [run id, shard tag, kind, task id, lease no].
cursor = '0'
repeat
  local found = redis.call('HSCAN', G .. 'timer', cursor, 'COUNT', 1000)
  cursor = found[1]
  for i = 1, #found[2], 2 do
    local t = cjson.decode(found[2][i + 1])
    name(t[2] .. 'run:' .. t[1], 't:' .. found[2][i])
  end
until cursor == '0'

-- Remembered ids: G..'seen' holds id -> the run id that remembered it ('' for a waiting row's id).
local crc = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
  end
  crc[i] = c
end

local function shard_tag(run)  -- zlib.crc32(run) % 256: the low byte of the CRC
  local c = 0xFFFFFFFF
  for i = 1, #run do
    c = bit.bxor(crc[bit.band(bit.bxor(c, string.byte(run, i)), 0xFF)], bit.rshift(c, 8))
  end
  return '{' .. prefix .. ':' .. int(bit.band(bit.bnot(c), 0xFF)) .. '}:'
end

cursor = '0'
repeat
  local found = redis.call('HSCAN', G .. 'seen', cursor, 'COUNT', 1000)
  cursor = found[1]
  for i = 1, #found[2], 2 do
    local run = found[2][i + 1]
    if run ~= '' then name(shard_tag(run) .. 'run:' .. run, 's:' .. found[2][i]) end
  end
until cursor == '0'
