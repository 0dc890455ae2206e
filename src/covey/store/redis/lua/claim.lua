-- claim: ARGV[2] worker, ARGV[3] JSON targets, ARGV[4] JSON labels, ARGV[5] limit, ARGV[6] lease ms.
local leased = claim(ARGV[2], cjson.decode(ARGV[3]), cjson.decode(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  now_ms())
return {leased, lease_reads({leased})}
