-- sent. Sends remembered by id, per sender device (storage/redis/sent_log.rs): a hash of
-- `<id hash>` → `<content hash>|<answer>` (answer empty while the first send is under way) plus
-- the field `bytes`, what its entries cost, and a sorted set of when each was claimed. Entries
-- past the memory window go, and the oldest go while the cost is over the device's budget: the
-- device never holds more than its budget.
-- Work: every entry is added once and removed once (aged out, evicted or released), so a call
-- costs O(1) amortized; the most one call removes is a budget's worth. A hash written before
-- `bytes` was kept is counted once, by one walk of its entries (at most the 10,000 the old cap
-- allowed).
-- Replies: 'claim' {'new'}, {'conflict'}, {'done', answer} or {'pending'}; 'record'
-- {'recorded'} or {'unclaimed'} (the claim is gone or another's: nothing written); 'release'
-- {'released'}.
-- One hash slot: {sender}.

local log = KEYS[1]                    -- hash: id hash → `<content hash>|<answer>`, `bytes`
local times = KEYS[2]                  -- sorted set: id hash → when claimed (ms)
local op = ARGV[1]                     -- 'claim', 'record' or 'release'
local id = ARGV[2]                     -- id hash
local now = tonumber(ARGV[3])          -- ms
-- Then, by op:
--   claim    ARGV[4] content hash, ARGV[5] window ms, ARGV[6] ms an unanswered claim lasts,
--            ARGV[7] budget bytes
--   record   ARGV[4] content hash, ARGV[5] answer, ARGV[6] window ms, ARGV[7] budget bytes
--   release  nothing
local TOTAL = 'bytes'

-- What an entry costs Redis: its field twice (hash and sorted set), its value, and what Redis
-- adds around them (dict and skiplist entries, string headers, table buckets: about 200 bytes
-- measured on Redis 7 with jemalloc, which also rounds each allocation up to its size class,
-- up to a quarter more). An upper bound, so that the budget bounds the memory used.
local function cost(field, value_len)
  return 2 * #field + value_len + math.ceil(value_len / 4) + 208
end

local function total()
  local t = redis.call('HGET', log, TOTAL)
  if t then return tonumber(t) end
  local sum = 0
  for _, f in ipairs(redis.call('ZRANGE', times, 0, -1)) do
    if redis.call('HEXISTS', log, f) == 1 then
      sum = sum + cost(f, redis.call('HSTRLEN', log, f))
    end
  end
  return sum
end

local function drop(f, t)
  local len = redis.call('HSTRLEN', log, f)
  if redis.call('HDEL', log, f) == 1 then t = t - cost(f, len) end
  redis.call('ZREM', times, f)
  return t
end

local function put(f, value, t)
  if redis.call('HEXISTS', log, f) == 1 then
    t = t - cost(f, redis.call('HSTRLEN', log, f))
  end
  redis.call('HSET', log, f, value)
  return t + cost(f, #value)
end

local function within_budget(budget, t)
  while t > budget do
    local oldest = redis.call('ZPOPMIN', times)
    -- Nothing left to drop: what is left to count is nothing.
    if #oldest == 0 then return 0 end
    t = drop(oldest[1], t)
  end
  return t
end

-- A hash holding only its total would outlive the entries' expiry: it goes with the last one.
local function save(t)
  if redis.call('ZCARD', times) == 0 then
    redis.call('DEL', log)
  else
    redis.call('HSET', log, TOTAL, t)
  end
end

local function expire(window)
  local secs = math.ceil(window / 1000)
  redis.call('EXPIRE', log, secs)
  redis.call('EXPIRE', times, secs)
end

if op == 'release' then
  save(drop(id, total()))
  return {'released'}
end

if op == 'record' then
  local content, answer = ARGV[4], ARGV[5]
  local window, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
  -- Only onto its own unanswered claim: not one aged out or evicted meanwhile (no time index
  -- would ever drop it), nor one a later repeat took over after the claim lapsed.
  if redis.call('HGET', log, id) ~= content .. '|' then return {'unclaimed'} end
  local t = total()
  t = put(id, content .. '|' .. answer, t)
  save(within_budget(budget, t))
  expire(window)
  return {'recorded'}
end

-- op == 'claim'
local content = ARGV[4]
local window, lapse, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local t = total()
local old = redis.call('ZRANGEBYSCORE', times, '-inf', now - window)
for _, gone in ipairs(old) do t = drop(gone, t) end
if #old > 0 then save(t) end

local function claim()
  t = put(id, content .. '|', t)
  redis.call('ZADD', times, now, id)
  save(within_budget(budget, t))
  expire(window)
  return {'new'}
end

local known = redis.call('HGET', log, id)
if not known then return claim() end
local known_content, answer = string.match(known, '^([^|]*)|(.*)$')
if known_content ~= content then return {'conflict'} end
if answer ~= '' then return {'done', answer} end
-- Unanswered past its lapse: the first send died; this one may send.
local since = tonumber(redis.call('ZSCORE', times, id) or '0')
if now - since >= lapse then return claim() end
return {'pending'}
