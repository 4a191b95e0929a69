-- Registers a connection in its device's set (scored by when the registration ends) and records
-- its session and device, so logout, device removal and deletion find the connections to close;
-- an ack-mode connection also joins the device's ack set. Drops this device's entries that
-- expired.
-- KEYS: 1 the device's connection set, 2 the user's connection → `<session>|<device>|<ack>` hash,
--       3 the device's ack-mode connections (set) (one hash slot: {user})
-- ARGV: 1 connection id, 2 registration end ms, 3 session id, 4 now ms, 5 ttl ms, 6 device id,
--       7 ack mode (0/1)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. '|' .. ARGV[6] .. '|' .. ARGV[7])
if ARGV[7] == '1' then
  redis.call('SADD', KEYS[3], ARGV[1])
else
  redis.call('SREM', KEYS[3], ARGV[1])
end
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  -- Entries written before devices carry no device: they were device 1's.
  local device = string.match(flat[i + 1], '^[^|]*|(%d+)') or '1'
  if device == ARGV[6] and not redis.call('ZSCORE', KEYS[1], flat[i]) then
    redis.call('HDEL', KEYS[2], flat[i])
  end
end
for _, c in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not redis.call('ZSCORE', KEYS[1], c) then redis.call('SREM', KEYS[3], c) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 1
