-- Prelude of the inbox scripts (inbox.rs and in_flight.rs put it before each): a device's stored
-- envelopes, and the only code that writes them. Five keys of one hash slot ({user}), passed by
-- every script in this order and named here once (`device_store`):
--   inbox    list of entries `[~]<expires_at_ms>|<client JSON>`, oldest first (envelope.rs);
--            `~` marks an envelope sent by an account younger than NEW_ACCOUNT_AGE_SECS
--   holders  list beside `inbox`, entry for entry: who holds each envelope (`<sender>`, or
--            `~<sender>` for a new account), so the oldest envelope of a holder is found without
--            copying envelopes into the script
--   stats    hash: `b` the inbox's bytes; per holder `n:<holder>` and `b:<holder>`; `n:~` and
--            `b:~` the new accounts' envelopes together
--   flight   sorted set: envelope id → lease end (ms) of the envelopes in flight (being written
--            by a fetch or a delivery, or written to an ack-mode connection and not acknowledged)
--   parked   hash: envelope id → `<seq>|<entry>` of the envelopes in flight; `#seq` orders them,
--            `#b` counts their bytes
-- Every step reads and writes O(1) per envelope it moves; the one scan, of `holders` (at most
-- INBOX_MAX short strings, never envelopes), finds the oldest envelope of the holder evicted.

local function device_store(keys, at)
  return {inbox = keys[at], holders = keys[at + 1], stats = keys[at + 2],
          flight = keys[at + 3], parked = keys[at + 4]}
end

-- The sender of an entry: the envelope's `from` (the body is base64 and the id a UUID, so the
-- first `"from":"` is the real one).
local function sender_of(e)
  return string.match(e, '"from":"([^"]*)"') or '?'
end

-- Who an entry counts against: its sender, `~`-prefixed when the sender was a new account.
local function holder_of(e)
  if string.byte(e, 1) == 126 then return '~' .. sender_of(e) end
  return sender_of(e)
end

local function is_new(holder)
  return string.byte(holder, 1) == 126
end

-- `[~]<expires_at_ms>|{"id":"<uuid>",…}`: the expiry and the envelope's id, its first field.
local function expiry_of(e)
  return tonumber(string.match(e, '^~?(%d+)|'))
end

local function id_of(e)
  return string.match(e, '^~?%d+|{"id":"([^"]*)"') or e
end

local function count(stats, holder, sign, bytes)
  local n = redis.call('HINCRBY', stats, 'n:' .. holder, sign)
  local b = redis.call('HINCRBY', stats, 'b:' .. holder, bytes)
  if n <= 0 or b <= 0 then redis.call('HDEL', stats, 'n:' .. holder, 'b:' .. holder) end
end

local function account(s, e, sign)
  local holder, bytes = holder_of(e), #e * sign
  redis.call('HINCRBY', s.stats, 'b', bytes)
  count(s.stats, holder, sign, bytes)
  if is_new(holder) then count(s.stats, '~', sign, bytes) end
end

local function stat(s, field)
  return math.max(0, tonumber(redis.call('HGET', s.stats, field)) or 0)
end

-- An empty inbox has nothing to account for: dropping the hash and the holders with it also
-- ends any drift (a list expired before its hash, one stored before holders were kept).
local function settle(s)
  if redis.call('EXISTS', s.inbox) == 0 then redis.call('DEL', s.stats, s.holders) end
end

local function touch(s, ttl)
  redis.call('EXPIRE', s.inbox, ttl)
  redis.call('EXPIRE', s.holders, ttl)
  redis.call('EXPIRE', s.stats, ttl)
end

local function push_tail(s, e)
  redis.call('RPUSH', s.inbox, e)
  redis.call('RPUSH', s.holders, holder_of(e))
  account(s, e, 1)
end

local function push_head(s, e)
  redis.call('LPUSH', s.inbox, e)
  redis.call('LPUSH', s.holders, holder_of(e))
  account(s, e, 1)
end

local function pop_head(s, count)
  local popped = redis.call('LPOP', s.inbox, count) or {}
  if #popped > 0 then redis.call('LPOP', s.holders, #popped) end
  for _, e in ipairs(popped) do account(s, e, -1) end
  return popped
end

-- `holders` out of step with `inbox` (an inbox stored before holders were kept) is rebuilt
-- once, from the entries themselves.
local function align_holders(s)
  local len = redis.call('LLEN', s.inbox)
  if redis.call('LLEN', s.holders) == len then return len end
  redis.call('DEL', s.holders)
  for i = 0, len - 1, 64 do
    local hs = {}
    for _, e in ipairs(redis.call('LRANGE', s.inbox, i, i + 63)) do hs[#hs + 1] = holder_of(e) end
    if #hs > 0 then redis.call('RPUSH', s.holders, unpack(hs)) end
  end
  return len
end

-- Removes the oldest envelope of `who` (a holder, or `~` for any new account), scanning
-- `holders` from `from` (0-based; what lies before it holds none of `who`'s). Returns the
-- index it was found at (the next search for `who` may start there) and its bytes, or nil.
local function remove_oldest_of(s, who, from)
  local len = align_holders(s)
  local i = from or 0
  while i < len do
    local chunk = redis.call('LRANGE', s.holders, i, i + 127)
    for j, h in ipairs(chunk) do
      if h == who or (who == '~' and is_new(h)) then
        local at = i + j - 1
        local e = redis.call('LINDEX', s.inbox, at)
        redis.call('LREM', s.inbox, 1, e)
        -- Holders are not unique: the one at `at` is marked, then removed.
        redis.call('LSET', s.holders, at, '#')
        redis.call('LREM', s.holders, 1, '#')
        account(s, e, -1)
        return at, #e
      end
    end
    i = i + 128
  end
  -- The hash said `who` held envelopes the list does not have: it drifted; forget them.
  redis.call('HDEL', s.stats, 'n:' .. who, 'b:' .. who)
  return nil
end

-- The holders' shares of the inbox, read once per step: a holder's share is the larger of its
-- share of INBOX_MAX and of INBOX_MAX_BYTES. New accounts count as one holder, `~`.
local function read_shares(s)
  local flat = redis.call('HGETALL', s.stats)
  local n, b = {}, {}
  for i = 1, #flat, 2 do
    local kind, who = string.match(flat[i], '^([nb]):(.*)$')
    if kind and (who == '~' or not is_new(who)) then
      if kind == 'n' then n[who] = tonumber(flat[i + 1]) else b[who] = tonumber(flat[i + 1]) end
    end
  end
  return {n = n, b = b}
end

-- The holder with the largest share; `me` on a tie with it (a flood then pays for itself).
local function largest(shares, max, max_bytes, me)
  local top, top_share = nil, -1
  for who, count in pairs(shares.n) do
    local share = math.max(count / max, (shares.b[who] or 0) / max_bytes)
    if share > top_share or (share == top_share and who == me) then
      top, top_share = who, share
    end
  end
  return top
end

-- Envelopes in flight.
local function parked_bytes(s)
  return math.max(0, tonumber(redis.call('HGET', s.parked, '#b')) or 0)
end

local function park(s, lease, e)
  local seq = redis.call('HINCRBY', s.parked, '#seq', 1)
  local value = seq .. '|' .. e
  local id = id_of(e)
  redis.call('HSET', s.parked, id, value)
  redis.call('HINCRBY', s.parked, '#b', #value)
  redis.call('ZADD', s.flight, lease, id)
end

-- Removes one envelope from flight by id; false when it was not there.
local function unpark(s, id)
  if redis.call('ZREM', s.flight, id) == 0 then return false end
  local bytes = redis.call('HSTRLEN', s.parked, id)
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

-- Drops expired envelopes from the head (the oldest).
local function drop_expired(s, now)
  while true do
    local head = redis.call('LINDEX', s.inbox, 0)
    if not head then return end
    local exp = expiry_of(head)
    if exp and exp > now then return end
    pop_head(s, 1)
  end
end

-- Puts entries back at the head of the inbox in their order; over a cap (others arrived
-- meanwhile), room is made from the largest holder's oldest envelopes.
local function put_back(s, envs, max, max_bytes, ttl)
  if #envs == 0 then return end
  settle(s)
  align_holders(s)
  for i = #envs, 1, -1 do push_head(s, envs[i]) end
  local shares = read_shares(s)
  while redis.call('LLEN', s.inbox) > max or stat(s, 'b') > max_bytes do
    local top = largest(shares, max, max_bytes, nil)
    if not top or not remove_oldest_of(s, top, 0) then break end
    shares = read_shares(s)
  end
  touch(s, ttl)
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
