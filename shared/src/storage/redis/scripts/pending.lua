-- pending (prelude: store). Drops expired envelopes from the head (the oldest) and counts what
-- is left.
-- Worst case: O(1) per expired envelope dropped (each is dropped once).
-- Reply: {'pending', count}.
-- One hash slot: {user}.

local s = device_store(KEYS, 1)        -- KEYS[1 … 5] (prelude_store.lua)
local now = tonumber(ARGV[1])          -- ms

drop_expired(s, now)
settle(s)
return {'pending', redis.call('LLEN', s.inbox)}
