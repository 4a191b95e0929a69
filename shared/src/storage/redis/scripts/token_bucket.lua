-- token_bucket (prelude: bucket). Takes `cost` tokens from one bucket (prelude_bucket.lua's
-- rules: 0 only asks, below 0 gives back).
-- Worst case: O(1).
-- Replies: {'allowed'}, {'limited', retry after ms}.

local bucket = KEYS[1]
local cap = tonumber(ARGV[1])          -- capacity
local rate = tonumber(ARGV[2])         -- refill per ms
local cost = tonumber(ARGV[3])

return take_tokens(bucket, cap, rate, cost)
