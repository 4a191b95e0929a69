-- Fetch batches in flight (after accounting.lua). A fetch moves each batch from the inbox into
-- the in-flight list (entries `<lease_until_ms>|<envelope>`) and removes it once written
-- ('done'), so a fetch that crashes or times out mid-write leaves its batch here instead of
-- losing it; the next 'take' after the lease puts such leftovers back at the head of the inbox.
-- KEYS: 1 inbox list, 2 inbox accounting, 3 in-flight list (one hash slot: {user})
-- ARGV: 1 'take' or 'done', 2 lease until ms, 3 now ms, 4 max envelopes, 5 max bytes,
--       6 ttl seconds, then
--   take: 7 batch size. Returns the batch, oldest first.
--   done: 7 n, 8 … 7+n the batch as taken, then the envelopes of it not written, oldest first.
local inbox, stats, flight = KEYS[1], KEYS[2], KEYS[3]
local lease, now = ARGV[2], tonumber(ARGV[3])
local max, max_bytes, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

-- Back at the head in their order; over a cap, room is made as requeue.lua makes it.
local function requeue(envs)
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

if ARGV[1] == 'done' then
  local n = tonumber(ARGV[7])
  for i = 8, 7 + n do redis.call('LREM', flight, 1, lease .. '|' .. ARGV[i]) end
  local unsent = {}
  for i = 8 + n, #ARGV do unsent[#unsent + 1] = ARGV[i] end
  requeue(unsent)
  return {}
end

-- Leftovers past their lease are older than anything in the inbox: they go back first. Batches
-- still leased belong to a fetch that may be writing them (another device of the user), so
-- they stay, and nothing is delivered twice.
local stale, live = {}, {}
for _, item in ipairs(redis.call('LRANGE', flight, 0, -1)) do
  local until_ms, env = string.match(item, '^(%d+)|(.*)$')
  if until_ms and tonumber(until_ms) > now then
    live[#live + 1] = item
  elseif env then
    stale[#stale + 1] = env
  end
end
if #stale > 0 then
  redis.call('DEL', flight)
  for _, item in ipairs(live) do redis.call('RPUSH', flight, item) end
  requeue(stale)
end
local batch = redis.call('LPOP', inbox, ARGV[7]) or {}
for _, e in ipairs(batch) do
  account(stats, e, -1)
  redis.call('RPUSH', flight, lease .. '|' .. e)
end
settle(inbox, stats)
if #batch > 0 then redis.call('EXPIRE', flight, ttl) end
return batch
