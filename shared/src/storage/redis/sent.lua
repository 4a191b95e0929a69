-- Sends remembered by id, per sender device (storage/redis/sent_log.rs): a hash of
-- `<id hash>` → `<content hash>|<answer>` (answer empty while the first send is under way) and
-- a sorted set of when each was claimed, so entries past the memory window go, and the device
-- never holds more than a bounded number (the oldest go first).
-- KEYS: 1 the hash, 2 the claim times (one hash slot: {sender})
-- ARGV: 1 op ('claim', 'record' or 'release'), 2 id hash, 3 now ms, then
--   claim: 4 content hash, 5 window ms, 6 ms an unanswered claim lasts, 7 most entries.
--          Returns {'new'}, {'conflict'}, {'done', answer} or {'pending'}.
--   record: 4 content hash, 5 answer, 6 window ms.
--   release: nothing more.
local log, times, id, now = KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[3])

if ARGV[1] == 'release' then
  redis.call('HDEL', log, id)
  redis.call('ZREM', times, id)
  return {}
end

if ARGV[1] == 'record' then
  -- Only onto its own unanswered claim: not one aged out meanwhile (no time index would ever
  -- drop it), nor one a later repeat took over after the claim lapsed.
  if redis.call('HGET', log, id) ~= ARGV[4] .. '|' then return {} end
  redis.call('HSET', log, id, ARGV[4] .. '|' .. ARGV[5])
  local secs = math.ceil(tonumber(ARGV[6]) / 1000)
  redis.call('EXPIRE', log, secs)
  redis.call('EXPIRE', times, secs)
  return {}
end

local window, lapse, most = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local old = redis.call('ZRANGEBYSCORE', times, '-inf', now - window)
for _, gone in ipairs(old) do redis.call('HDEL', log, gone) end
redis.call('ZREMRANGEBYSCORE', times, '-inf', now - window)

local function claim()
  redis.call('HSET', log, id, ARGV[4] .. '|')
  redis.call('ZADD', times, now, id)
  local over = redis.call('ZCARD', times) - most
  if over > 0 then
    local popped = redis.call('ZPOPMIN', times, over)
    for i = 1, #popped, 2 do redis.call('HDEL', log, popped[i]) end
  end
  local secs = math.ceil(window / 1000)
  redis.call('EXPIRE', log, secs)
  redis.call('EXPIRE', times, secs)
  return {'new'}
end

local known = redis.call('HGET', log, id)
if not known then return claim() end
local content, answer = string.match(known, '^([^|]*)|(.*)$')
if content ~= ARGV[4] then return {'conflict'} end
if answer ~= '' then return {'done', answer} end
-- Unanswered past its lapse: the first send died; this one may send.
local since = tonumber(redis.call('ZSCORE', times, id) or '0')
if now - since >= lapse then return claim() end
return {'pending'}
