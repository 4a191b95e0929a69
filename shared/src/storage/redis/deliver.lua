-- Store-then-drain in one atomic step, so a message is never left waiting while its recipient
-- is connected and has fetched.
-- KEYS: 1 inbox marker, 2 inbox list, 3 connection set (one hash slot: {user})
-- ARGV: 1 envelope (`<expires_at_ms>|<json>`, storage/redis/envelope.rs), 2 max envelopes, 3 ttl seconds, 4 now ms, 5 online_only (0/1), 6 pop batch
-- Returns {code, connections, envelopes}: code -1 unknown inbox, 0 dropped, 1 queued, 2 online.
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, {}, {}} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
local conns = redis.call('ZREVRANGE', KEYS[3], 0, -1)
if ARGV[5] == '1' then
  if #conns == 0 then return {0, {}, {}} end
  return {2, conns, {ARGV[1]}}
end
-- Connected and nothing waiting: storing and taking it back would cancel out, so hand it over
-- directly (the caller puts it in the inbox if the push fails).
if #conns > 0 and redis.call('LLEN', KEYS[2]) == 0 then return {2, conns, {ARGV[1]}} end
local len = redis.call('RPUSH', KEYS[2], ARGV[1])
local max = tonumber(ARGV[2])
if len > max then redis.call('LTRIM', KEYS[2], -max, -1) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
if #conns == 0 then return {1, {}, {}} end
local popped = redis.call('LPOP', KEYS[2], ARGV[6])
return {2, conns, popped or {}}
