-- Registers a connection in its user's set (scored by when the registration ends) and records
-- its session, so logout and deletion find the connections to close; drops what expired.
-- KEYS: 1 connection set, 2 connection → session hash (one hash slot: {user})
-- ARGV: 1 connection id, 2 registration end ms, 3 session id, 4 now ms, 5 ttl ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
for _, c in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not redis.call('ZSCORE', KEYS[1], c) then redis.call('HDEL', KEYS[2], c) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
