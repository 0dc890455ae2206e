-- layout: ARGV[2] the layout version this covey writes. Records it on an empty prefix; returns
-- the version found (a newer one is refused in Python; older ones are migrated there).

local found = redis.call('HGET', G .. 'meta', 'layout')
if not found then
  redis.call('HSET', G .. 'meta', 'layout', ARGV[2])
  redis.call('HSETNX', G .. 'meta', 'epoch', 0)
  return tonumber(ARGV[2])
end
return tonumber(found)
