-- Takes up to ARGV[1] envelopes from the head (the oldest). (After store.lua.)
-- Worst case: O(1) per envelope taken (at most POP_BATCH).
-- KEYS: 1-5 the device store (store.lua). ARGV: 1 how many.
local s = device_store(KEYS, 1)
local popped = pop_head(s, tonumber(ARGV[1]))
settle(s)
return popped
