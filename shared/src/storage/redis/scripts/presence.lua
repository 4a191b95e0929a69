-- presence. Counts a user's connection in or out of the user's set of live connections (all
-- devices together) and tells whether that was a transition: the first live connection (the
-- user came online) or the removal of the last (the user went offline). One atomic step on the
-- user's slot, so of concurrent connects (or disconnects) of the user's devices exactly one sees
-- the transition; counting a connection twice in, or out, changes nothing. A member whose
-- lifetime ended (its removal was lost, e.g. a crashed function) is dropped here, so a user is
-- never online for longer than a connection can live.
-- Worst case: O(log n + m): n the user's connections (at most MAX_CONNECTIONS_PER_USER per
-- device), m those whose lifetime ended, dropped here.
-- Reply: {'online'}, {'offline'} or {'unchanged'}.
-- One hash slot: {user}.

local conns = KEYS[1]                  -- sorted set: connection → when its lifetime ends (ms)
local state = KEYS[2]                  -- hash: `last_seen` ('1': shown), `offline_at` (ms)
local op = ARGV[1]                     -- 'in' or 'out'
local connection = ARGV[2]
local now = ARGV[3]                    -- ms
local ends_ms = ARGV[4]                -- 'in': when the connection's lifetime ends (ms)
local ttl_ms = ARGV[5]                 -- 'in': the set's expiry, the longest lifetime

if op == 'in' then
  redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
  local before = redis.call('ZCARD', conns)
  redis.call('ZADD', conns, ends_ms, connection)
  redis.call('PEXPIRE', conns, ttl_ms)
  if before == 0 then return {'online'} end
  return {'unchanged'}
end

local before = redis.call('ZCARD', conns)
redis.call('ZREM', conns, connection)
redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
if before > 0 and redis.call('ZCARD', conns) == 0 then
  -- When the user was last seen is kept only for a user who shows it.
  if redis.call('HGET', state, 'last_seen') == '1' then
    redis.call('HSET', state, 'offline_at', now)
  end
  return {'offline'}
end
return {'unchanged'}
