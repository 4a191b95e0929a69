-- Puts envelopes back at the head in their order, then, if the inbox is over a cap (others
-- arrived meanwhile), makes room as a delivery would (`put_back`, after store.lua).
-- Worst case: O(1) per envelope put back, and one eviction (a scan of holders) for each
-- envelope over a cap.
-- KEYS: 1-5 the device store (store.lua). ARGV: 1 max envelopes, 2 max bytes, 3 ttl seconds,
-- 4… the entries, oldest first.
local s = device_store(KEYS, 1)
local envs = {}
for i = 4, #ARGV do envs[#envs + 1] = ARGV[i] end
put_back(s, envs, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
return redis.call('LLEN', s.inbox)
