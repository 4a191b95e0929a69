-- Store-then-drain in one atomic step, so a message is never left waiting while its recipient
-- is connected and has fetched. (After accounting.lua.)
-- KEYS: 1 inbox marker, 2 inbox list, 3 connection set, 4 inbox accounting, 5 in-flight list
--       (one hash slot: {user})
-- ARGV: 1 envelope (`<expires_at_ms>|<json>`, storage/redis/envelope.rs), 2 max envelopes, 3 ttl seconds, 4 now ms, 5 online_only (0/1), 6 pop batch, 7 max bytes, 8 lease until ms
-- Returns {code, connections, envelopes}: code -1 unknown inbox, 0 dropped, 1 queued, 2 online
-- (the envelope handed over, not stored), 3 online (envelopes taken into the in-flight list,
-- as a fetch takes them: in_flight.lua settles them, or puts them back after the lease).
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, {}, {}} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
local conns = redis.call('ZREVRANGE', KEYS[3], 0, -1)
if ARGV[5] == '1' then
  if #conns == 0 then return {0, {}, {}} end
  return {2, conns, {ARGV[1]}}
end
-- Connected and nothing waiting: storing and taking it back would cancel out, so hand it over
-- directly (the caller puts it in the inbox if the push fails).
if #conns > 0 and redis.call('LLEN', KEYS[2]) == 0 then return {2, conns, {ARGV[1]}} end
local inbox, stats, env = KEYS[2], KEYS[4], ARGV[1]
local max, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[7])
settle(inbox, stats)
if #env > max_bytes then return {0, {}, {}} end
drop_expired(inbox, stats, tonumber(ARGV[4]))
local function full()
  return redis.call('LLEN', inbox) >= max or total_bytes(stats) + #env > max_bytes
end
if full() then
  -- A full inbox refuses the sender that holds the largest share of it (ties included): a
  -- flood ends up dropping the flooder's own message, never others' mail. Any other sender
  -- makes room at the expense of the largest holder's oldest envelopes.
  local me = sender_of(env)
  local top, top_share, mine = shares(stats, max, max_bytes, me)
  if mine > 0 and (not top or mine >= top_share) then return {0, {}, {}} end
  while full() do
    if not evict_one(inbox, stats, max, max_bytes, me) then break end
  end
  if full() then return {0, {}, {}} end
end
redis.call('RPUSH', inbox, env)
account(stats, env, 1)
touch(inbox, stats, ARGV[3])
if #conns == 0 then return {1, {}, {}} end
local popped = redis.call('LPOP', inbox, ARGV[6]) or {}
for _, e in ipairs(popped) do
  account(stats, e, -1)
  redis.call('RPUSH', KEYS[5], ARGV[8] .. '|' .. e)
end
settle(inbox, stats)
redis.call('EXPIRE', KEYS[5], ARGV[3])
return {3, conns, popped}
