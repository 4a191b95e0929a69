-- Puts envelopes back at the head in their order, then, if the inbox is over a cap (others
-- arrived meanwhile), makes room as a delivery would (`put_back`, after accounting.lua).
-- KEYS: 1 inbox list, 2 inbox accounting. ARGV: 1 max envelopes, 2 max bytes, 3 ttl seconds,
-- 4… the envelopes, oldest first.
local envs = {}
for i = 4, #ARGV do envs[#envs + 1] = ARGV[i] end
put_back(KEYS[1], KEYS[2], envs, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
return redis.call('LLEN', KEYS[1])
