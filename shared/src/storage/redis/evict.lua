-- Caps a user's live connections at ARGV[3], evicting the oldest (docs/api.md §6.1). The
-- connection set is scored by when each registration ends, which says nothing of age, so a
-- second set keeps the order of arrival.
-- KEYS: 1 connection set, 2 arrival order, 3 ack-mode connections (one hash slot: {user})
-- ARGV: 1 connection id (just registered), 2 now ms, 3 max connections, 4 ttl ms
-- Returns {evicted connection ids, those of them in ack mode}, already out of every set.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
-- After every arrival already recorded, even within one millisecond.
local order = tonumber(ARGV[2])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= order then order = tonumber(last[2]) + 1 end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then redis.call('ZADD', KEYS[2], order, ARGV[1]) end
for _, c in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not redis.call('ZSCORE', KEYS[1], c) then redis.call('ZREM', KEYS[2], c) end
end
local evicted, acking = {}, {}
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  -- A connection with no arrival recorded (from before this script, or a handshake whose own
  -- call is still to come) counts as older than any recorded one.
  for _, c in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if excess == 0 then break end
    if c ~= ARGV[1] and not redis.call('ZSCORE', KEYS[2], c) then
      table.insert(evicted, c)
      excess = excess - 1
    end
  end
  for _, c in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if excess == 0 then break end
    if c ~= ARGV[1] then
      table.insert(evicted, c)
      excess = excess - 1
    end
  end
  for _, c in ipairs(evicted) do
    redis.call('ZREM', KEYS[1], c)
    redis.call('ZREM', KEYS[2], c)
    if redis.call('SREM', KEYS[3], c) == 1 then table.insert(acking, c) end
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {evicted, acking}
