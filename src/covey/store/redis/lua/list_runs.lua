-- list_runs: ARGV[2] the index (all runs, or one status), ARGV[3] limit (negative: all).
-- Returns the newest runs' rows, with every run tied with the last one's created time, so
-- Python can order ties by run id and cut at limit.

local index, limit = ARGV[2], tonumber(ARGV[3])
if limit == 0 then return {} end
local keys
if limit < 0 then
  keys = redis.call('ZREVRANGE', index, 0, -1)
else
  local top = redis.call('ZREVRANGE', index, limit - 1, limit - 1, 'WITHSCORES')
  if #top == 0 then
    keys = redis.call('ZREVRANGE', index, 0, -1)
  else
    keys = redis.call('ZREVRANGEBYSCORE', index, '+inf', top[2])
  end
end
local rows = {}
for i, key in ipairs(keys) do
  rows[i] = redis.call('HMGET', key, 'id', 'wf', 'st', 'seq', 'c', 'u', 'fin', 'in', 'out', 'err')
end
return rows
