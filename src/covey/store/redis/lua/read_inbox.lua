-- read_inbox: ARGV[2] after seq, ARGV[3] limit, ARGV[4..] the inbox sets of the shards wanted
-- (none: all of the inbox). Returns {seq, id, run id, event, output, state ops} rows, oldest first.

local after, limit = '(' .. ARGV[2], tonumber(ARGV[3])
if limit <= 0 then return {} end
local found = {}
local sources = {G .. 'inbox'}
if #ARGV > 3 then sources = {unpack(ARGV, 4)} end
for _, source in ipairs(sources) do
  local r = redis.call('ZRANGEBYSCORE', source, after, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #r, 2 do found[#found + 1] = {r[i], tonumber(r[i + 1])} end
end
if #sources > 1 then table.sort(found, function(a, b) return a[2] < b[2] end) end
local rows = {}
for i = 1, math.min(limit, #found) do
  local f = redis.call('HMGET', found[i][1], 'id', 'run', 'ev', 'out', 'ops')
  rows[i] = {found[i][2], f[1], f[2], f[3], f[4], f[5]}
end
return rows
