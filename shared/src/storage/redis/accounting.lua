-- Prelude of the inbox scripts (inbox.rs puts it before each): who holds how much of an inbox.
-- A hash beside the list (same `{user}` slot) keeps `b`, the stored bytes of the whole inbox,
-- and per sender `n:<sender>` and `b:<sender>`. Every script that adds or removes envelopes
-- keeps it, so the byte cap and the per-sender shares never need a scan of the list. The
-- sender is read from the envelope itself (`expiry|{"id":…,"from":"<uuid>",…}`: the body is
-- base64 and the id a UUID, so the first `"from":"` is the real one).
local function sender_of(e)
  return string.match(e, '"from":"([^"]*)"') or '?'
end

local function account(stats, e, sign)
  local s = sender_of(e)
  redis.call('HINCRBY', stats, 'b', #e * sign)
  local n = redis.call('HINCRBY', stats, 'n:' .. s, sign)
  local b = redis.call('HINCRBY', stats, 'b:' .. s, #e * sign)
  if n <= 0 or b <= 0 then redis.call('HDEL', stats, 'n:' .. s, 'b:' .. s) end
end

local function total_bytes(stats)
  return math.max(0, tonumber(redis.call('HGET', stats, 'b')) or 0)
end

-- An empty inbox has nothing to account for: dropping the hash with it also ends any drift
-- (envelopes stored before the hash existed, a list expired before its hash).
local function settle(inbox, stats)
  if redis.call('EXISTS', inbox) == 0 then redis.call('DEL', stats) end
end

local function touch(inbox, stats, ttl)
  redis.call('EXPIRE', inbox, ttl)
  redis.call('EXPIRE', stats, ttl)
end

-- Each sender's share of the inbox: the larger of its share of the envelope cap and of the
-- byte cap. Returns the largest holder other than `except`, its share, and the share of `except`.
local function shares(stats, max, max_bytes, except)
  local flat = redis.call('HGETALL', stats)
  local n, b = {}, {}
  for i = 1, #flat, 2 do
    local kind, who = string.match(flat[i], '^([nb]):(.*)$')
    if kind == 'n' then n[who] = tonumber(flat[i + 1]) end
    if kind == 'b' then b[who] = tonumber(flat[i + 1]) end
  end
  local top, top_share, mine = nil, -1, 0
  for who, count in pairs(n) do
    local share = math.max(count / max, (b[who] or 0) / max_bytes)
    if who == except then
      mine = share
    elseif share > top_share then
      top, top_share = who, share
    end
  end
  return top, top_share, mine
end

-- Removes the oldest envelope of `who`; false when the list holds none (the hash drifted: its
-- entry for `who` is dropped).
local function evict_oldest_of(inbox, stats, who)
  local len = redis.call('LLEN', inbox)
  local i = 0
  while i < len do
    local chunk = redis.call('LRANGE', inbox, i, i + 63)
    for _, e in ipairs(chunk) do
      if sender_of(e) == who then
        redis.call('LREM', inbox, 1, e)
        account(stats, e, -1)
        return true
      end
    end
    i = i + 64
  end
  redis.call('HDEL', stats, 'n:' .. who, 'b:' .. who)
  return false
end

-- Drops one envelope to make room, taken from the largest holder other than `except` (its
-- oldest); with no accounting to go by, the oldest of all. False when nothing is left to drop.
local function evict_one(inbox, stats, max, max_bytes, except)
  for _ = 1, 8 do
    local top = shares(stats, max, max_bytes, except)
    if not top then break end
    if evict_oldest_of(inbox, stats, top) then return true end
  end
  local oldest = redis.call('LPOP', inbox)
  if not oldest then return false end
  account(stats, oldest, -1)
  return true
end

-- Drops expired envelopes from the head (the oldest). An entry is `<expires_at_ms>|<json>`
-- (storage/redis/envelope.rs writes it).
local function drop_expired(inbox, stats, now)
  while true do
    local head = redis.call('LINDEX', inbox, 0)
    if not head then return end
    local exp = tonumber(string.match(head, '^(%d+)|'))
    if exp and exp > now then return end
    redis.call('LPOP', inbox)
    account(stats, head, -1)
  end
end

-- Puts envelopes back at the head of the inbox in their order; over a cap (others arrived
-- meanwhile), room is made as a delivery makes it: from the largest holder's oldest envelopes.
local function put_back(inbox, stats, envs, max, max_bytes, ttl)
  if #envs == 0 then return end
  settle(inbox, stats)
  for i = #envs, 1, -1 do
    redis.call('LPUSH', inbox, envs[i])
    account(stats, envs[i], 1)
  end
  while redis.call('LLEN', inbox) > max or total_bytes(stats) > max_bytes do
    if not evict_one(inbox, stats, max, max_bytes, nil) then break end
  end
  touch(inbox, stats, ttl)
end

-- Envelopes in flight (entries `<lease_until_ms>|<envelope>`) whose lease ended before `now`
-- (all of them when `now` is nil) go back to the head: a taker that died, or an ack-mode
-- delivery never acknowledged. They are older than anything in the inbox. Entries still leased
-- stay: a fetch may be writing them, or a client may still acknowledge them.
local function reclaim(inbox, stats, flight, now, max, max_bytes, ttl)
  -- Entries are appended with leases that only grow (each lease is its taker's now plus the one
  -- lease length), so when the head is still leased all are: the common case costs one read.
  if now then
    local head = redis.call('LINDEX', flight, 0)
    if not head then return end
    local until_ms = tonumber(string.match(head, '^(%d+)|'))
    if until_ms and until_ms > now then return end
  end
  local stale, live = {}, {}
  for _, item in ipairs(redis.call('LRANGE', flight, 0, -1)) do
    local until_ms, env = string.match(item, '^(%d+)|(.*)$')
    if now and until_ms and tonumber(until_ms) > now then
      live[#live + 1] = item
    elseif env then
      stale[#stale + 1] = env
    end
  end
  if #stale == 0 then return end
  redis.call('DEL', flight)
  for _, item in ipairs(live) do redis.call('RPUSH', flight, item) end
  if #live > 0 then redis.call('EXPIRE', flight, ttl) end
  put_back(inbox, stats, stale, max, max_bytes, ttl)
end
