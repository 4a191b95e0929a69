-- Drops expired envelopes from the head (the oldest) and counts what is left. (After store.lua.)
-- Worst case: O(1) per expired envelope dropped (each is dropped once).
-- KEYS: 1-5 the device store (store.lua). ARGV: 1 now ms.
local s = device_store(KEYS, 1)
drop_expired(s, tonumber(ARGV[1]))
settle(s)
return redis.call('LLEN', s.inbox)
