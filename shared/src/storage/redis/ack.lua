-- `ack` of a connection in ack mode (after bucket.lua): deletes the device's in-flight envelopes
-- with these ids. The frame's bucket is read first: without a token the ack is refused before
-- any other work. The token is spent only when the ack deleted nothing (each envelope is
-- deleted once, and a paid send stored it), so only useless acks spend the frame limit.
-- Worst case: one bucket read and write, one O(1) lookup per id (at most MAX_ACK_IDS), and
-- three more commands per envelope deleted; no envelope is copied into the script.
-- KEYS: 1 flight (sorted set: envelope id → lease end), 2 parked (hash: envelope id →
--       `<seq>|<entry>`, `#b` their bytes), 3 the frame rate limit's bucket (one hash slot: {user})
-- ARGV: 1 ttl seconds, 2 bucket capacity, 3 refill per ms, 4 cost, 5… envelope ids
-- Returns {allowed (1/0), retry after ms, how many envelopes were deleted}.
local flight, parked, bucket = KEYS[1], KEYS[2], KEYS[3]
local ttl, cap, rate, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local tokens = read_bucket(bucket, cap, rate)
if tokens[1] < math.max(cost, 1) then
  return {0, math.ceil((math.max(cost, 1) - tokens[1]) / rate), 0}
end

local deleted, bytes = 0, 0
for i = 5, #ARGV do
  -- Looked up in the hash first: its values are envelopes, never small, so it is a real hash
  -- table (O(1) per id), where the sorted set may be a small list read end to end.
  local id = ARGV[i]
  local size = redis.call('HSTRLEN', parked, id)
  if size > 0 then
    redis.call('HDEL', parked, id)
    redis.call('ZREM', flight, id)
    bytes = bytes + size
    deleted = deleted + 1
  end
end
if deleted == 0 then
  write_bucket(bucket, cap, rate, tokens[1] - cost, tokens[2])
  return {1, 0, 0}
end

if redis.call('ZCARD', flight) == 0 then
  redis.call('DEL', flight, parked)
else
  -- What stays in flight lasts the inbox's TTL from its last ack (deliver.lua sets it once).
  redis.call('HINCRBY', parked, '#b', -bytes)
  redis.call('EXPIRE', flight, ttl)
  redis.call('EXPIRE', parked, ttl)
end
return {1, 0, deleted}
