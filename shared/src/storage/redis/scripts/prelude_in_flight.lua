-- Prelude `in_flight` (after prelude_store.lua): envelopes in flight, kept by id in a device
-- store's `flight` and `parked` keys. In flight means being written by a fetch or a delivery,
-- or written to an ack-mode connection and not acknowledged; each has a lease, and what a lease
-- outlives goes back to the head of the inbox.
--   flight   sorted set: envelope id → lease end (ms)
--   parked   hash: envelope id → `<seq>|<entry>`; `#seq` orders them, `#b` counts their bytes
--            (the values', plus each disappearing message's body: `weight`, prelude_store.lua)
-- Every step is O(1) per envelope it parks, unparks or moves back.

-- `[~]<expires_at_ms>|{"id":"<uuid>",…}`: the envelope's id, its first field; for a group
-- send's entry `[~]<expires_at_ms>|@<envelope id>|<sender>`, the id it points at.
local function id_of(e)
  return string.match(e, '^~?%d+|{"id":"([^"]*)"') or string.match(e, '^~?%d+|@([^|]*)|') or e
end

-- What a parked value `<seq>|<entry>` counts for in `#b`.
local function parked_weight(value)
  return #value + (tonumber(string.match(value, '^%d+|~?%d+|@[^|]*|[^|]*|(%d+)$')) or 0)
end

-- What `#b` counts for a parked value `length` bytes long. Only a short value can point at a
-- body (a pointer is at most some 120 bytes): only such a value is read, so no envelope with a
-- body of any size is copied into the script. ack.lua does the same.
local function parked_size(parked, id, length)
  if length > 0 and length < 192 then
    return parked_weight(redis.call('HGET', parked, id) or '')
  end
  return length
end

local function parked_bytes(s)
  return math.max(0, tonumber(redis.call('HGET', s.parked, '#b')) or 0)
end

local function park(s, lease, e)
  local seq = redis.call('HINCRBY', s.parked, '#seq', 1)
  local value = seq .. '|' .. e
  local id = id_of(e)
  redis.call('HSET', s.parked, id, value)
  redis.call('HINCRBY', s.parked, '#b', parked_weight(value))
  redis.call('ZADD', s.flight, lease, id)
end

-- Removes one envelope from flight by id; false when it was not there.
local function unpark(s, id)
  if redis.call('ZREM', s.flight, id) == 0 then return false end
  local bytes = parked_size(s.parked, id, redis.call('HSTRLEN', s.parked, id))
  redis.call('HDEL', s.parked, id)
  redis.call('HINCRBY', s.parked, '#b', -bytes)
  return true
end

-- Nothing in flight: the hash's counters go with it. Otherwise both keys last the inbox's TTL.
local function settle_flight(s, ttl)
  if redis.call('ZCARD', s.flight) == 0 then
    redis.call('DEL', s.flight, s.parked)
  else
    redis.call('EXPIRE', s.flight, ttl)
    redis.call('EXPIRE', s.parked, ttl)
  end
end

-- Envelopes in flight whose lease ended before `now` (all of them when `now` is nil) go back to
-- the head of the inbox in the order they were taken: a taker that died, or an ack-mode delivery
-- never acknowledged. Entries still leased stay. Reads only the envelopes it moves back.
local function reclaim(s, now, max, max_bytes, ttl)
  local stale
  if now then
    if #redis.call('ZRANGEBYSCORE', s.flight, '-inf', now, 'LIMIT', 0, 1) == 0 then return end
    stale = redis.call('ZRANGEBYSCORE', s.flight, '-inf', now)
  else
    stale = redis.call('ZRANGE', s.flight, 0, -1)
  end
  if #stale == 0 then return end
  local back = {}
  for i, id in ipairs(stale) do
    local v = redis.call('HGET', s.parked, id)
    unpark(s, id)
    if v then
      local seq, e = string.match(v, '^(%d+)|(.*)$')
      if e then back[#back + 1] = {tonumber(seq), e} end
    end
  end
  table.sort(back, function(x, y) return x[1] < y[1] end)
  local envs = {}
  for i, pair in ipairs(back) do envs[i] = pair[2] end
  put_back(s, envs, max, max_bytes, ttl)
  settle_flight(s, ttl)
end
