-- pending (prelude: store). Drops expired envelopes from the head (the oldest) and counts what
-- is left.
-- Worst case: O(1) per expired envelope dropped (each is dropped once).
-- Reply: {'pending', count, expired}: what waits, and how many expired envelopes were dropped.
-- One hash slot: {user}.

local s = device_store(KEYS, 1)        -- KEYS[1 … 5] (prelude_store.lua)
local now = tonumber(ARGV[1])          -- ms

local waiting = redis.call('LLEN', s.inbox)
drop_expired(s, now)
settle(s)
local left = redis.call('LLEN', s.inbox)
return {'pending', left, waiting - left}
