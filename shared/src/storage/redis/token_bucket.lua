-- Token bucket. KEYS: 1 bucket. ARGV: 1 capacity, 2 refill per ms, 3 cost (0 = only ask; below
-- 0 gives tokens back, never above capacity, and always answers allowed).
-- Returns {allowed (1/0), retry after ms}.
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
if cost < 0 then
  tokens = math.min(cap, tokens - cost)
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
  return {1, 0}
end
local need = math.max(cost, 1)
if tokens < need then
  return {0, math.ceil((need - tokens) / rate)}
end
if cost > 0 then
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
end
return {1, 0}
