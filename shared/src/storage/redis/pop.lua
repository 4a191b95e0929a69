-- Takes up to ARGV[1] envelopes from the head (the oldest). (After accounting.lua.)
-- KEYS: 1 inbox list, 2 inbox accounting.
local popped = redis.call('LPOP', KEYS[1], ARGV[1]) or {}
for _, e in ipairs(popped) do account(KEYS[2], e, -1) end
settle(KEYS[1], KEYS[2])
return popped
