-- ack (prelude: bucket). The `ack` of a connection in ack mode: deletes the device's in-flight
-- envelopes with these ids. The frame's bucket is read first: without a token the ack is refused
-- before any other work. The token is spent only when the ack deleted nothing (each envelope is
-- deleted once, and a paid send stored it), so only useless acks spend the frame limit.
-- Acks are most of the in-flight calls of a busy ack-mode connection: this script carries only
-- the bucket's prelude (every prelude line runs again on every call), and touches envelopes by
-- id only.
-- Worst case: one bucket read and write, one O(1) lookup per id (at most MAX_ACK_IDS), and
-- four more commands per envelope deleted; no envelope is copied into the script (only an entry
-- under 192 bytes, which may be a disappearing message's pointer, is read).
-- Replies: {'limited', retry after ms} (nothing deleted), {'acked', how many were deleted,
-- the ids of those that were disappearing messages' pointers (their envelopes, stored for this
-- device alone, the caller deletes)}.
-- One hash slot: {user}.

local flight = KEYS[1]                 -- sorted set: envelope id → lease end
local parked = KEYS[2]                 -- hash: envelope id → `<seq>|<entry>`, `#b` their bytes
local bucket = KEYS[3]                 -- the frame rate limit's bucket
local ttl = ARGV[1]                    -- seconds
local cap = tonumber(ARGV[2])          -- bucket capacity
local rate = tonumber(ARGV[3])         -- refill per ms
local cost = tonumber(ARGV[4])
local IDS_AT = 5                       -- ARGV[5 …]: envelope ids

local tokens = read_bucket(bucket, cap, rate)
if tokens[1] < math.max(cost, 1) then
  return {'limited', math.ceil((math.max(cost, 1) - tokens[1]) / rate)}
end

local deleted, bytes, own = 0, 0, {}
for i = IDS_AT, #ARGV do
  -- Looked up in the hash first: its values are envelopes, never small, so it is a real hash
  -- table (O(1) per id), where the sorted set may be a small list read end to end.
  local id = ARGV[i]
  local size = redis.call('HSTRLEN', parked, id)
  -- A short value may be a disappearing message's pointer, which counts its body's bytes too
  -- (`parked_size`, prelude_in_flight.lua); only such a value is read.
  if size > 0 and size < 192 then
    local value = redis.call('HGET', parked, id)
    local body = tonumber(string.match(value, '^%d+|~?%d+|@[^|]*|[^|]*|(%d+)$'))
    size = #value + (body or 0)
    if body then own[#own + 1] = id end
  end
  if size > 0 then
    redis.call('HDEL', parked, id)
    redis.call('ZREM', flight, id)
    bytes = bytes + size
    deleted = deleted + 1
  end
end
if deleted == 0 then
  write_bucket(bucket, cap, rate, tokens[1] - cost, tokens[2])
  return {'acked', 0, {}}
end

if redis.call('ZCARD', flight) == 0 then
  redis.call('DEL', flight, parked)
else
  -- What stays in flight lasts the inbox's TTL from its last ack (deliver.lua sets it once).
  redis.call('HINCRBY', parked, '#b', -bytes)
  redis.call('EXPIRE', flight, ttl)
  redis.call('EXPIRE', parked, ttl)
end
return {'acked', deleted, own}
