-- token_buckets. Several token buckets taken together, all or none (token_bucket.lua's rules
-- for each, without its prelude: one `TIME` for all): a refusal takes nothing from any.
-- Worst case: O(1) per bucket (at most four at once).
-- Replies: {'allowed'}, {'limited', retry after ms (the longest wait among the refusing
-- buckets)}.
-- One hash slot on a cluster (the callers' bucket names share a {tag}).

-- KEYS: the buckets. ARGV: per bucket i (KEYS[i]), BUCKET_FIELDS fields from bucket_at(i):
local BUCKET_FIELDS = 3
local CAPACITY, REFILL_PER_MS, COST = 0, 1, 2  -- offsets within a bucket's fields
local function bucket_at(i) return 1 + (i - 1) * BUCKET_FIELDS end
local function fields(i)
  local at = bucket_at(i)
  return tonumber(ARGV[at + CAPACITY]), tonumber(ARGV[at + REFILL_PER_MS]),
    tonumber(ARGV[at + COST])          -- cost 0: only ask
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, wait = {}, 0
for i, key in ipairs(KEYS) do
  local cap, rate, cost = fields(i)
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local left = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  left = math.min(cap, left + math.max(0, now - ts) * rate)
  local need = math.max(cost, 1)
  if left < need then wait = math.max(wait, math.ceil((need - left) / rate)) end
  tokens[i] = left
end
if wait > 0 then return {'limited', wait} end
for i, key in ipairs(KEYS) do
  local cap, rate, cost = fields(i)
  if cost > 0 then
    redis.call('HSET', key, 'tokens', tostring(tokens[i] - cost), 'ts', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)
  end
end
return {'allowed'}
