-- read_inbox: ARGV[2] after seq, ARGV[3] limit, ARGV[4..] the shard tags wanted (none: every row).
-- Returns {seq, id, run id, event, output, state ops} rows, oldest first.
-- A few shards merge their own indexes; many walk the global index and keep their rows, so an
-- engine loop holding all 256 shards reads one index, not 256.

local FEW = 16
local after, limit = ARGV[2], tonumber(ARGV[3])
if limit <= 0 then return {} end
local found = {}

local function take(source, cursor, count)
  local r = redis.call('ZRANGEBYSCORE', source, cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, count)
  local rows = {}
  for i = 1, #r, 2 do rows[#rows + 1] = {r[i], tonumber(r[i + 1])} end
  return rows
end

if #ARGV == 3 then
  found = take(G .. 'inbox', '(' .. after, limit)
elseif #ARGV - 3 <= FEW then
  for i = 4, #ARGV do
    for _, row in ipairs(take(ARGV[i] .. 'inbox', '(' .. after, limit)) do found[#found + 1] = row end
  end
  table.sort(found, function(a, b) return a[2] < b[2] end)
else
  local wanted = {}
  for i = 4, #ARGV do wanted[ARGV[i]] = true end
  local cursor, window = '(' .. after, math.max(2 * limit, 100)
  while #found < limit do
    local rows = take(G .. 'inbox', cursor, window)
    for _, row in ipairs(rows) do
      if wanted[string.match(row[1], '^(.-}:)')] then found[#found + 1] = row end
    end
    if #rows < window then break end
    cursor = '(' .. int(rows[#rows][2])
  end
end

local rows = {}
for i = 1, math.min(limit, #found) do
  local f = redis.call('HMGET', found[i][1], 'id', 'run', 'ev', 'out', 'ops')
  rows[i] = {found[i][2], f[1], f[2], f[3], f[4], f[5]}
end
return rows
