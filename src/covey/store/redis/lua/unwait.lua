-- unwait: ARGV[2] worker, ARGV[3] token, ARGV[4] '1' to take the grants left on the worker's list
-- ('0' to leave them), ARGV[5..] the claim's targets. Withdraws the worker's standing claim (if
-- still that one) and its entries; returns the grants taken (a grant that came as its wait
-- ended; stop marks, which the caller skips). A wait that got its grant only drops its entries,
-- and may do so late: the list may by then hold a grant for the worker's next claim.

local worker, token = ARGV[2], ARGV[3]
local body = redis.call('HGET', G .. 'waiter', worker)
if body and int(cjson.decode(body).token) == token then redis.call('HDEL', G .. 'waiter', worker) end
for i = 5, #ARGV do redis.call('LREM', G .. 'waiting:' .. ARGV[i], 0, worker .. '|' .. token) end
if ARGV[4] ~= '1' then return {} end
local key = G .. 'grant:' .. worker
local left = redis.call('LRANGE', key, 0, -1)
redis.call('DEL', key)
return left
