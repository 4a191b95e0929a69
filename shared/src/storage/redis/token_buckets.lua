-- Several token buckets taken together, all or none (token_bucket.lua's rules for each): a
-- refusal takes nothing from any. KEYS: the buckets (one hash slot on a cluster). ARGV, per
-- bucket i: 3i-2 capacity, 3i-1 refill per ms, 3i cost (0 = only ask).
-- Returns {allowed (1/0), retry after ms (the longest wait among the refusing buckets)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, wait = {}, 0
for i, key in ipairs(KEYS) do
  local cap, rate, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local left = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  left = math.min(cap, left + math.max(0, now - ts) * rate)
  local need = math.max(cost, 1)
  if left < need then wait = math.max(wait, math.ceil((need - left) / rate)) end
  tokens[i] = left
end
if wait > 0 then return {0, wait} end
for i, key in ipairs(KEYS) do
  local cap, rate, cost = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if cost > 0 then
    redis.call('HSET', key, 'tokens', tostring(tokens[i] - cost), 'ts', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)
  end
end
return {1, 0}
