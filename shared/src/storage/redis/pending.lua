-- Drops expired envelopes from the head (the oldest) and counts what is left. (After
-- accounting.lua.) KEYS: 1 inbox list, 2 inbox accounting. ARGV: 1 now ms.
drop_expired(KEYS[1], KEYS[2], tonumber(ARGV[1]))
settle(KEYS[1], KEYS[2])
return redis.call('LLEN', KEYS[1])
