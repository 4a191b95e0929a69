-- A send to every device of one recipient: the device check and, per device, store-then-drain,
-- in one atomic step, so a send is stored for the whole device set or for none, and a message
-- is never left waiting while its device is connected and has fetched. (After store.lua.)
-- A full inbox keeps the newest: room is made from the oldest envelopes of the holder with the
-- largest share (the sender itself on a tie, so one sender overflowing an inbox gets exactly
-- first in, first out). New accounts (entries marked `~`) together hold at most their part of
-- an inbox, and make room only from their own envelopes: no number of throwaway accounts
-- evicts anyone else's.
-- Worst case per target: O(connections) to read them (at most MAX_CONNECTIONS_PER_USER), a
-- reclaim of lapsed leases (each envelope once per lease), the accounting hash read once
-- (a field pair per holder, at most INBOX_MAX), and at most `most_evictions` evictions, each a
-- scan of holders (short strings) from where the last one of that holder stopped.
-- KEYS: 1 the recipient's devices hash, then per target device i (from 0): 2+7i … 6+7i its
--       store (store.lua: inbox, holders, stats, flight, parked), 7+7i connection set,
--       8+7i ack-mode connections (one hash slot: {user})
-- ARGV: see the names below; then per target i: 14+3i device id, 15+3i registration id
--       ('' = unchecked), 16+3i entry (`[~]<expires_at_ms>|<json>`, storage/redis/envelope.rs)
-- Returns {-1} unknown recipient (no devices hash), {-2, missing, extra, targets} mismatched,
-- {-3, stale} stale registrations, or {1, r1, r2, …} with per target {code, connections,
-- envelopes, ack-mode connections}: code 0 dropped, 1 queued, 2 online (the envelope handed
-- over, not stored), 3 online (envelopes taken into flight, as a fetch takes them:
-- in_flight.lua settles them, or puts them back after the lease; what is written to an
-- ack-mode connection stays there until acknowledged).
local n = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local ttl = ARGV[3]
local now = tonumber(ARGV[4])
local online_only = ARGV[5] == '1'
local pop_batch = tonumber(ARGV[6])
local max_bytes = tonumber(ARGV[7])
local lease = tonumber(ARGV[8])
local self_device = ARGV[9]
local legacy_form = ARGV[10] == '1'
local new_part_max = tonumber(ARGV[11])
local new_part_bytes = tonumber(ARGV[12])
local most_evictions = tonumber(ARGV[13])
local TARGETS_AT = 14

if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local registered, targets = {}, {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local d = flat[i]
  if d ~= 'v' then
    registered[d] = string.match(flat[i + 1], '^(%d+)')
    if d ~= self_device then table.insert(targets, d) end
  end
end
-- Before devices a self-send went to one's own (only) device: that form keeps doing so.
if legacy_form and #targets == 0 and self_device ~= '' and registered[self_device] then
  targets = {self_device}
end
local wanted, given = {}, {}
for _, d in ipairs(targets) do wanted[d] = true end
local missing, extra, stale = {}, {}, {}
for i = 0, n - 1 do
  local d, r = ARGV[TARGETS_AT + 3 * i], ARGV[TARGETS_AT + 1 + 3 * i]
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

-- Makes room for `env` in the device's inbox; false when it cannot be stored.
local function make_room(s, env)
  local me = holder_of(env)
  local new_sender = is_new(me)
  -- Envelopes in flight (awaiting an acknowledgement, or being written) count toward the caps.
  local function full()
    return redis.call('LLEN', s.inbox) + redis.call('ZCARD', s.flight) >= max
      or stat(s, 'b') + parked_bytes(s) + #env > max_bytes
  end
  local function over_part()
    return new_sender
      and (stat(s, 'n:~') + 1 > new_part_max or stat(s, 'b:~') + #env > new_part_bytes)
  end
  if not full() and not over_part() then return true end
  local shares = (not new_sender) and read_shares(s)
  local hints = {}
  for _ = 1, most_evictions do
    local victim = me
    if shares then victim = largest(shares, max, max_bytes, me) end
    if not victim then return false end
    local at, bytes = remove_oldest_of(s, victim, hints[victim])
    if at then
      -- Later entries moved up one: so did every search's starting point past `at`.
      for who, from in pairs(hints) do
        if from > at then hints[who] = from - 1 end
      end
      hints[victim] = at
    end
    if shares then
      local left = at and (shares.n[victim] or 0) - 1 or 0
      if left <= 0 then
        shares.n[victim], shares.b[victim] = nil, nil
      else
        shares.n[victim], shares.b[victim] = left, (shares.b[victim] or 0) - bytes
      end
    elseif not at then
      return false
    end
    if not full() and not over_part() then return true end
  end
  return false
end

local function deliver(s, conns_key, acks_key, env)
  redis.call('ZREMRANGEBYSCORE', conns_key, '-inf', now)
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
  if online_only then
    if #conns == 0 then return {0, {}, {}, {}} end
    return {2, conns, {env}, {}}
  end
  -- Connected: what an ack-mode connection left unacknowledged past its lease goes first.
  if #conns > 0 then reclaim(s, now, max, max_bytes, ttl) end
  -- Connected, nothing waiting and nobody acknowledging: storing and taking it back would
  -- cancel out, so hand it over directly (the caller puts it in the inbox if the push fails).
  local idle = #conns > 0 and redis.call('LLEN', s.inbox) == 0
  if idle and #acking == 0 then
    return {2, conns, {env}, {}}
  end
  -- Connected in ack mode with nothing waiting: what storing and taking it back would leave is
  -- this envelope alone in flight, so park it directly, within the caps (over one, it goes the
  -- ordinary way). What was in flight keeps its expiry: every ack renews it (ack.lua).
  if idle then
    local in_flight = redis.call('ZCARD', s.flight)
    if in_flight < max and parked_bytes(s) + #env <= max_bytes then
      park(s, lease, env)
      if in_flight == 0 then settle_flight(s, ttl) end
      return {3, conns, {env}, acking}
    end
  end
  settle(s)
  if #env > max_bytes then return {0, {}, {}, {}} end
  drop_expired(s, now)
  if not make_room(s, env) then
    settle(s)
    return {0, {}, {}, {}}
  end
  push_tail(s, env)
  touch(s, ttl)
  if #conns == 0 then return {1, {}, {}, {}} end
  local popped = pop_head(s, pop_batch)
  for _, e in ipairs(popped) do park(s, lease, e) end
  settle(s)
  settle_flight(s, ttl)
  return {3, conns, popped, acking}
end

local results = {1}
for i = 0, n - 1 do
  local k = 2 + 7 * i
  table.insert(results,
    deliver(device_store(KEYS, k), KEYS[k + 5], KEYS[k + 6], ARGV[TARGETS_AT + 2 + 3 * i]))
end
return results
