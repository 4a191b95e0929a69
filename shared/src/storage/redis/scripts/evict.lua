-- evict. Caps a device's live connections, evicting the oldest (docs/api.md §6.1). The
-- connection set is scored by when each registration ends, which says nothing of age, so a
-- second set keeps the order of arrival.
-- Worst case: O(connections) of the device (at most MAX_CONNECTIONS_PER_USER, plus those whose
-- registration ended, dropped here).
-- Reply: {'evicted', connection ids, those of them in ack mode}, already out of every set.
-- One hash slot: {user}.

local conns = KEYS[1]                  -- sorted set: connection → registration end ms
local arrivals = KEYS[2]               -- sorted set: connection → order of arrival
local ack_conns = KEYS[3]              -- set: the connections in ack mode
local connection = ARGV[1]             -- just registered
local now = ARGV[2]                    -- ms
local most = tonumber(ARGV[3])         -- connections kept
local ttl_ms = ARGV[4]

redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
-- After every arrival already recorded, even within one millisecond.
local order = tonumber(now)
local last = redis.call('ZRANGE', arrivals, -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= order then order = tonumber(last[2]) + 1 end
if redis.call('ZSCORE', conns, connection) then redis.call('ZADD', arrivals, order, connection) end
for _, c in ipairs(redis.call('ZRANGE', arrivals, 0, -1)) do
  if not redis.call('ZSCORE', conns, c) then redis.call('ZREM', arrivals, c) end
end
local evicted, acking = {}, {}
local excess = redis.call('ZCARD', conns) - most
if excess > 0 then
  -- A connection with no arrival recorded (from before this script, or a handshake whose own
  -- call is still to come) counts as older than any recorded one.
  for _, c in ipairs(redis.call('ZRANGE', conns, 0, -1)) do
    if excess == 0 then break end
    if c ~= connection and not redis.call('ZSCORE', arrivals, c) then
      table.insert(evicted, c)
      excess = excess - 1
    end
  end
  for _, c in ipairs(redis.call('ZRANGE', arrivals, 0, -1)) do
    if excess == 0 then break end
    if c ~= connection then
      table.insert(evicted, c)
      excess = excess - 1
    end
  end
  for _, c in ipairs(evicted) do
    redis.call('ZREM', conns, c)
    redis.call('ZREM', arrivals, c)
    if redis.call('SREM', ack_conns, c) == 1 then table.insert(acking, c) end
  end
end
redis.call('PEXPIRE', arrivals, ttl_ms)
return {'evicted', evicted, acking}
