-- A send to every device of one recipient: the device check and, per device, store-then-drain,
-- in one atomic step, so a send is stored for the whole device set or for none, and a message
-- is never left waiting while its device is connected and has fetched. (After accounting.lua.)
-- KEYS: 1 the recipient's devices hash, then per target device i (from 0): 2+5i inbox list,
--       3+5i connection set, 4+5i inbox accounting, 5+5i in-flight list, 6+5i ack-mode
--       connections (one hash slot: {user})
-- ARGV: 1 targets n, 2 max envelopes, 3 ttl seconds, 4 now ms, 5 online_only (0/1), 6 pop batch,
--       7 max bytes, 8 lease until ms, 9 sending device when sending to oneself (else ''),
--       10 legacy form (0/1), then per target i: 11+3i device id, 12+3i registration id ('' =
--       unchecked), 13+3i envelope (`<expires_at_ms>|<json>`, storage/redis/envelope.rs)
-- Returns {-1} unknown recipient (no devices hash), {-2, missing, extra, targets} mismatched,
-- {-3, stale} stale registrations, or {1, r1, r2, …} with per target {code, connections,
-- envelopes, ack-mode connections}: code 0 dropped, 1 queued, 2 online (the envelope handed
-- over, not stored), 3 online (envelopes taken into the in-flight list, as a fetch takes them:
-- in_flight.lua settles them, or puts them back after the lease; what is written to an
-- ack-mode connection stays there until acknowledged).
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = tonumber(ARGV[1])
local registered, targets = {}, {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local d = flat[i]
  if d ~= 'v' then
    registered[d] = string.match(flat[i + 1], '^(%d+)')
    if d ~= ARGV[9] then table.insert(targets, d) end
  end
end
-- Before devices a self-send went to one's own (only) device: that form keeps doing so.
if ARGV[10] == '1' and #targets == 0 and ARGV[9] ~= '' and registered[ARGV[9]] then
  targets = {ARGV[9]}
end
local wanted, given = {}, {}
for _, d in ipairs(targets) do wanted[d] = true end
local missing, extra, stale = {}, {}, {}
for i = 0, n - 1 do
  local d, r = ARGV[11 + 3 * i], ARGV[12 + 3 * i]
  given[d] = true
  if not wanted[d] then
    table.insert(extra, tonumber(d))
  elseif r ~= '' and registered[d] ~= r then
    table.insert(stale, tonumber(d))
  end
end
local sorted = {}
for _, d in ipairs(targets) do
  if not given[d] then table.insert(missing, tonumber(d)) end
  table.insert(sorted, tonumber(d))
end
table.sort(missing); table.sort(extra); table.sort(stale); table.sort(sorted)
if #missing > 0 or #extra > 0 then return {-2, missing, extra, sorted} end
if #stale > 0 then return {-3, stale} end

local max, max_bytes, now = tonumber(ARGV[2]), tonumber(ARGV[7]), tonumber(ARGV[4])
local function deliver(inbox, conns_key, stats, in_flight, acks_key, env)
  redis.call('ZREMRANGEBYSCORE', conns_key, '-inf', ARGV[4])
  local conns = redis.call('ZREVRANGE', conns_key, 0, -1)
  -- The ack-mode connections still live: those of the set among the live ones just read.
  local acking = {}
  local members = redis.call('SMEMBERS', acks_key)
  if #members > 0 then
    local live = {}
    for _, c in ipairs(conns) do live[c] = true end
    for _, c in ipairs(members) do
      if live[c] then table.insert(acking, c) end
    end
  end
  if ARGV[5] == '1' then
    if #conns == 0 then return {0, {}, {}, {}} end
    return {2, conns, {env}, {}}
  end
  -- Connected: what an ack-mode connection left unacknowledged past its lease goes first.
  if #conns > 0 then reclaim(inbox, stats, in_flight, now, max, max_bytes, ARGV[3]) end
  -- Connected, nothing waiting and nobody acknowledging: storing and taking it back would
  -- cancel out, so hand it over directly (the caller puts it in the inbox if the push fails).
  local idle = #conns > 0 and redis.call('LLEN', inbox) == 0
  if idle and #acking == 0 then
    return {2, conns, {env}, {}}
  end
  -- Connected in ack mode with nothing waiting: what storing and taking it back would leave is
  -- this envelope alone in flight, so put it there directly (the in-flight cap still applies:
  -- over it, the push is taken back and the envelope goes the ordinary way). A list that
  -- existed keeps its expiry: every ack that leaves it non-empty renews it (ack.lua).
  if idle and #env <= max_bytes then
    local len = redis.call('RPUSH', in_flight, ARGV[8] .. '|' .. env)
    if len <= max then
      if len == 1 then redis.call('EXPIRE', in_flight, ARGV[3]) end
      return {3, conns, {env}, acking}
    end
    redis.call('RPOP', in_flight)
  end
  settle(inbox, stats)
  if #env > max_bytes then return {0, {}, {}, {}} end
  drop_expired(inbox, stats, now)
  -- Envelopes in flight (awaiting an acknowledgement, or being written) count toward the cap.
  local function full()
    return redis.call('LLEN', inbox) + redis.call('LLEN', in_flight) >= max
      or total_bytes(stats) + #env > max_bytes
  end
  if full() then
    -- A full inbox refuses the sender that holds the largest share of it (ties included): a
    -- flood ends up dropping the flooder's own message, never others' mail. Any other sender
    -- makes room at the expense of the largest holder's oldest envelopes.
    local me = sender_of(env)
    local top, top_share, mine = shares(stats, max, max_bytes, me)
    if mine > 0 and (not top or mine >= top_share) then return {0, {}, {}, {}} end
    while full() do
      if not evict_one(inbox, stats, max, max_bytes, me) then break end
    end
    if full() then return {0, {}, {}, {}} end
  end
  redis.call('RPUSH', inbox, env)
  account(stats, env, 1)
  touch(inbox, stats, ARGV[3])
  if #conns == 0 then return {1, {}, {}, {}} end
  local popped = redis.call('LPOP', inbox, ARGV[6]) or {}
  for _, e in ipairs(popped) do
    account(stats, e, -1)
    redis.call('RPUSH', in_flight, ARGV[8] .. '|' .. e)
  end
  settle(inbox, stats)
  redis.call('EXPIRE', in_flight, ARGV[3])
  return {3, conns, popped, acking}
end

local results = {1}
for i = 0, n - 1 do
  local k = 2 + 5 * i
  table.insert(results,
    deliver(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], ARGV[13 + 3 * i]))
end
return results
