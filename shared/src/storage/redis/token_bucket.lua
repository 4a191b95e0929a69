-- Token bucket (after bucket.lua). KEYS: 1 bucket. ARGV: 1 capacity, 2 refill per ms, 3 cost.
-- Returns {allowed (1/0), retry after ms}.
return take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
