-- append_inbox: (id, run id, shard tag, event, output or '', state ops or '') per row from ARGV[2].
-- A row whose id is in the inbox or was committed as seen is ignored.

for i = 2, #ARGV, 6 do
  local output, ops = ARGV[i + 4], ARGV[i + 5]
  inbox_add(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], output ~= '' and output or nil,
    ops ~= '' and ops or nil, true)
end
return 0
