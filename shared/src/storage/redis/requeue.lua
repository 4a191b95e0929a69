-- Puts envelopes back at the head in their order, then, if the inbox is over a cap (others
-- arrived meanwhile), makes room as a delivery would: from the largest holder's oldest
-- envelopes, not blindly from the head. (After accounting.lua.)
-- KEYS: 1 inbox list, 2 inbox accounting. ARGV: 1 max envelopes, 2 max bytes, 3 ttl seconds,
-- 4… the envelopes, oldest first.
local inbox, stats = KEYS[1], KEYS[2]
local max, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
settle(inbox, stats)
for i = #ARGV, 4, -1 do
  redis.call('LPUSH', inbox, ARGV[i])
  account(stats, ARGV[i], 1)
end
while redis.call('LLEN', inbox) > max or total_bytes(stats) > max_bytes do
  if not evict_one(inbox, stats, max, max_bytes, nil) then break end
end
touch(inbox, stats, ARGV[3])
return redis.call('LLEN', inbox)
