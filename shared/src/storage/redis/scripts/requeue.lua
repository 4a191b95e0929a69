-- requeue (prelude: store). Puts envelopes back at the head in their order, then, if the inbox
-- is over a cap (others arrived meanwhile), makes room as a delivery would (`put_back`).
-- Worst case: O(1) per envelope put back, and one eviction (a scan of holders) for each
-- envelope over a cap.
-- Reply: {'requeued', inbox length}.
-- One hash slot: {user}.

local s = device_store(KEYS, 1)        -- KEYS[1 … 5] (prelude_store.lua)
local max = tonumber(ARGV[1])          -- INBOX_MAX
local max_bytes = tonumber(ARGV[2])    -- INBOX_MAX_BYTES
local ttl = ARGV[3]                    -- seconds
local ENTRIES_AT = 4                   -- ARGV[4 …]: the entries, oldest first

local envs = {}
for i = ENTRIES_AT, #ARGV do envs[#envs + 1] = ARGV[i] end
put_back(s, envs, max, max_bytes, ttl)
return {'requeued', redis.call('LLEN', s.inbox)}
