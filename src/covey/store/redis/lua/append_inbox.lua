-- append_inbox: ARGV[2] the bus channel to hint ('' for none), then (id, run id, shard tag, event,
-- output or '', state ops or '') per row from ARGV[3]. A row whose id is in the inbox or was
-- committed as seen is ignored (inbox_add). A new row goes to its shard's engine node directly when that node
-- waits for rows (inbox_push); for the others the hint is published once the rows are in (see
-- Connection.carry_hints).

local unpushed = false
inbox_reserve((#ARGV - 2) / 6)
for i = 3, #ARGV, 6 do
  local output, ops = ARGV[i + 4], ARGV[i + 5]
  output, ops = output ~= '' and output or nil, ops ~= '' and ops or nil
  local seq, member = inbox_add(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], output, ops)
  if seq and not inbox_push(ARGV[i + 2], member) then
    unpushed = true
  end
end
if ARGV[2] ~= '' and unpushed then redis.call('PUBLISH', ARGV[2], 'inbox') end
return 0
