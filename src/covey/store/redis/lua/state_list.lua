-- state_list: ARGV[2] key set, ARGV[3] data hash, ARGV[4] min, ARGV[5] max (ZRANGEBYLEX bounds),
-- ARGV[6] limit. Returns {key, value, version} of existing keys in byte (= code point) order.

local limit = tonumber(ARGV[6])
if limit <= 0 then return {} end
local rows = {}
for i, key in ipairs(redis.call('ZRANGEBYLEX', ARGV[2], ARGV[4], ARGV[5], 'LIMIT', 0, limit)) do
  local f = redis.call('HMGET', ARGV[3], 'v:' .. key, 'n:' .. key)
  rows[i] = {key, f[1], tonumber(f[2])}
end
return rows
