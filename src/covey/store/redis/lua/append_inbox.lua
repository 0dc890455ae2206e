-- append_inbox: ARGV[2] the bus channel to hint ('' for none), then (id, run id, shard tag, event,
-- output or '', state ops or '') per row from ARGV[3]. A row whose id is in the inbox or was
-- committed as seen is ignored. The hint is published once the rows are in (see Connection.carry_hints).

for i = 3, #ARGV, 6 do
  local output, ops = ARGV[i + 4], ARGV[i + 5]
  inbox_add(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], output ~= '' and output or nil,
    ops ~= '' and ops or nil, true)
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], 'inbox') end
return 0
