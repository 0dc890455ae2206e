-- read_inbox: ARGV[2] after seq, ARGV[3] limit, ARGV[4..] the shard tags wanted (none: every row).
-- Returns the rows' members (inbox_member), oldest first.
-- A few shards merge their own indexes, which hold ids, and take each row by its seq; many walk
-- the global index and keep their rows, so an engine loop holding all 256 shards reads one index,
-- not 256.

local FEW = 16
local after, limit = ARGV[2], tonumber(ARGV[3])
if limit <= 0 then return {} end

local function scores(source, cursor, count)
  return redis.call('ZRANGEBYSCORE', source, cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, count)
end

if #ARGV == 3 then
  return redis.call('ZRANGEBYSCORE', G .. 'inbox', '(' .. after, '+inf', 'LIMIT', 0, limit)
end

local found = {}
if #ARGV - 3 <= FEW then
  local seqs = {}
  for i = 4, #ARGV do
    local r = scores(ARGV[i] .. 'inbox', '(' .. after, limit)
    for j = 2, #r, 2 do seqs[#seqs + 1] = tonumber(r[j]) end
  end
  table.sort(seqs)
  for i = 1, math.min(limit, #seqs) do
    local score = int(seqs[i])
    found[i] = redis.call('ZRANGEBYSCORE', G .. 'inbox', score, score)[1]
  end
  return found
end

local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local cursor, window = '(' .. after, math.max(2 * limit, 100)
while #found < limit do
  local r = scores(G .. 'inbox', cursor, window)
  for j = 1, #r, 2 do
    if #found < limit and wanted[string.match(r[j], '^(.-}:)')] then found[#found + 1] = r[j] end
  end
  if #r < 2 * window then break end
  cursor = '(' .. int(tonumber(r[#r]))
end
return found
