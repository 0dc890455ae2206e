-- list_runs: ARGV[2] limit (negative: all), ARGV[3..] the indexes to list from (one status's, or
-- every status's for all runs). Returns the newest runs' rows, with every run tied with the last
-- one's created time, so Python can order ties by run id and cut at limit.

local limit = tonumber(ARGV[2])
if limit == 0 then return {} end
local indexes = {}
for i = 3, #ARGV do indexes[#indexes + 1] = ARGV[i] end

-- The created time of the limit-th newest run of all the indexes ('-inf' when they hold fewer):
-- the newest `limit` of each hold the newest `limit` of all of them.
local floor = '-inf'
if limit > 0 then
  local scores = {}
  for _, index in ipairs(indexes) do
    local top = redis.call('ZREVRANGE', index, 0, limit - 1, 'WITHSCORES')
    for i = 2, #top, 2 do scores[#scores + 1] = tonumber(top[i]) end
  end
  if #scores >= limit then
    table.sort(scores, function(a, b) return a > b end)
    floor = int(scores[limit])
  end
end

local rows = {}
for _, index in ipairs(indexes) do
  for _, key in ipairs(redis.call('ZREVRANGEBYSCORE', index, '+inf', floor)) do
    rows[#rows + 1] = redis.call('HMGET', key, 'id', 'wf', 'st', 'seq', 'c', 'u', 'fin', 'in', 'out', 'err')
  end
end
return rows
