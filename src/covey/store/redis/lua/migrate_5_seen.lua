-- Layout 5: one hash knows every id that may not be appended again, and no index lists all runs.
-- Layout 4 kept the ids of waiting inbox rows in G..'inbox:ids' (id -> seq) beside G..'seen'
-- (client-chosen id -> run id, once committed); each joins G..'seen' as '' (an id committed as seen
-- meanwhile keeps its run id). G..'runs' listed every run beside its status's index G..'runs:'..st;
-- the status indexes now serve for all runs, and it goes.
-- Runs once per prefix, from Connection._check_layout; a fresh prefix starts at the new layout.

local ids = G .. 'inbox:ids'
local cursor = '0'
repeat
  local found = redis.call('HSCAN', ids, cursor, 'COUNT', 1000)
  cursor = found[1]
  for i = 1, #found[2], 2 do redis.call('HSETNX', G .. 'seen', found[2][i], '') end
until cursor == '0'
redis.call('DEL', ids, G .. 'runs')
