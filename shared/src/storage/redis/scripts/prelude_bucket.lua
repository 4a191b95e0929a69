-- Prelude `bucket`: one token bucket, read and written in the script's atomic step (the scripts
-- it goes before: scripts/mod.rs). The time is Redis' own (`TIME`), so every instance refills by
-- the same clock. A bucket is a hash: `tokens` and `ts` (ms of the last write).

-- The bucket as of now: {tokens, now ms}.
local function read_bucket(key, cap, rate)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  return {math.min(cap, tokens + math.max(0, now - ts) * rate), now}
end

local function write_bucket(key, cap, rate, tokens, now)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)
end

-- Cost 0 only asks; below 0 gives tokens back, never above capacity, and always answers
-- allowed. Returns {'allowed'} or {'limited', retry after ms}.
local function take_tokens(key, cap, rate, cost)
  local bucket = read_bucket(key, cap, rate)
  local tokens, now = bucket[1], bucket[2]
  if cost < 0 then
    write_bucket(key, cap, rate, math.min(cap, tokens - cost), now)
    return {'allowed'}
  end
  local need = math.max(cost, 1)
  if tokens < need then
    return {'limited', math.ceil((need - tokens) / rate)}
  end
  if cost > 0 then write_bucket(key, cap, rate, tokens - cost, now) end
  return {'allowed'}
end
