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
