-- register. Registers a connection in its device's set (scored by when the registration ends)
-- and records its session and device, so logout, device removal and deletion find the
-- connections to close; an ack-mode connection also joins the device's ack set. Drops this
-- device's entries that expired.
-- Worst case: O(connections) of the account (at most MAX_CONNECTIONS_PER_USER per device, plus
-- those whose registration ended, dropped here).
-- Reply: {'registered'}.
-- One hash slot: {user}.

local conns = KEYS[1]                  -- sorted set: the device's connection → registration end
local sessions = KEYS[2]               -- hash: the user's connection → `<session>|<device>|<ack>`
local ack_conns = KEYS[3]              -- set: the device's connections in ack mode
local connection = ARGV[1]
local ends_ms = ARGV[2]                -- registration end
local session = ARGV[3]
local now = ARGV[4]                    -- ms
local ttl_ms = ARGV[5]
local device = ARGV[6]
local ack = ARGV[7]                    -- ack mode: '1' or '0'

redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
redis.call('ZADD', conns, ends_ms, connection)
redis.call('HSET', sessions, connection, session .. '|' .. device .. '|' .. ack)
if ack == '1' then
  redis.call('SADD', ack_conns, connection)
else
  redis.call('SREM', ack_conns, connection)
end
local flat = redis.call('HGETALL', sessions)
for i = 1, #flat, 2 do
  -- Entries written before devices carry no device: they were device 1's.
  local entry_device = string.match(flat[i + 1], '^[^|]*|(%d+)') or '1'
  if entry_device == device and not redis.call('ZSCORE', conns, flat[i]) then
    redis.call('HDEL', sessions, flat[i])
  end
end
for _, c in ipairs(redis.call('SMEMBERS', ack_conns)) do
  if not redis.call('ZSCORE', conns, c) then redis.call('SREM', ack_conns, c) end
end
redis.call('PEXPIRE', conns, ttl_ms)
redis.call('PEXPIRE', sessions, ttl_ms)
redis.call('PEXPIRE', ack_conns, ttl_ms)
return {'registered'}
