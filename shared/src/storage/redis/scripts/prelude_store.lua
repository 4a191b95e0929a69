-- Prelude `store`: a device's stored envelopes and their accounting, and the only code that
-- writes them (scripts/mod.rs names the scripts it goes before; Lua in Redis has no includes).
-- A device store is five keys of one hash slot ({user}), passed by every script that takes it
-- in this order (`device_store`; RedisKeys::device_store builds them):
--   inbox    list of entries `[~]<expires_at_ms>|<client JSON>`, a group send's pointer
--            `[~]<expires_at_ms>|@<envelope id>|<sender>`, or a disappearing message's
--            `[~]<expires_at_ms>|@<envelope id>|<sender>|<body bytes>`, oldest first
--            (envelope.rs); `~` marks an envelope sent by an account younger than
--            NEW_ACCOUNT_AGE_SECS
--   holders  list beside `inbox`, entry for entry: who holds each envelope (`<sender>`, or
--            `~<sender>` for a new account), so the oldest envelope of a holder is found without
--            copying envelopes into the script
--   stats    hash: `b` the inbox's bytes (`weight`); per holder `n:<holder>` and
--            `b:<holder>`; `n:~` and `b:~` the new accounts' envelopes together
--   flight   sorted set: envelope id → lease end (ms) of the envelopes in flight
--            (prelude_in_flight.lua)
--   parked   hash: envelope id → `<seq>|<entry>` of the envelopes in flight
--            (prelude_in_flight.lua)
-- Every step reads and writes O(1) per envelope it moves; the one scan, of `holders` (at most
-- INBOX_MAX short strings, never envelopes), finds the oldest envelope of the holder evicted.

-- The device store whose first key is keys[at].
local function device_store(keys, at)
  return {inbox = keys[at], holders = keys[at + 1], stats = keys[at + 2],
          flight = keys[at + 3], parked = keys[at + 4]}
end

-- The sender of an entry: the envelope's `from` (the body is base64 and the id a UUID, so the
-- first `"from":"` is the real one), or the sender a pointer names
-- (`[~]<expires>|@<envelope id>|<sender>[|<body bytes>]`, envelope.rs).
local function sender_of(e)
  return string.match(e, '^~?%d+|@[^|]*|([^|]*)') or string.match(e, '"from":"([^"]*)"') or '?'
end

-- The bytes an entry holds in the inbox's accounting: its own, plus, for a disappearing
-- message, the body it points at (stored for this device alone, under its own key, so that Redis
-- deletes it at the expiry). A group send's envelope, stored once for all, is not counted per
-- device. For any other entry the anchored match fails within its first few characters.
local function weight(e)
  return #e + (tonumber(string.match(e, '^~?%d+|@[^|]*|[^|]*|(%d+)$')) or 0)
end

-- The envelope id a disappearing message's pointer names (the key of its body, kept for this
-- device alone), or nil for any other entry.
local function own_body_of(e)
  return string.match(e, '^~?%d+|@([^|]*)|[^|]*|%d+$')
end

-- Who an entry counts against: its sender, `~`-prefixed when the sender was a new account.
local function holder_of(e)
  if string.byte(e, 1) == 126 then return '~' .. sender_of(e) end
  return sender_of(e)
end

local function is_new(holder)
  return string.byte(holder, 1) == 126
end

-- `[~]<expires_at_ms>|…`: the entry's expiry.
local function expiry_of(e)
  return tonumber(string.match(e, '^~?(%d+)|'))
end

local function count(stats, holder, sign, bytes)
  local n = redis.call('HINCRBY', stats, 'n:' .. holder, sign)
  local b = redis.call('HINCRBY', stats, 'b:' .. holder, bytes)
  if n <= 0 or b <= 0 then redis.call('HDEL', stats, 'n:' .. holder, 'b:' .. holder) end
end

local function account(s, e, sign)
  local holder, bytes = holder_of(e), weight(e) * sign
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
-- index it was found at (the next search for `who` may start there), its bytes and the entry,
-- or nil.
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
        return at, weight(e), e
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
