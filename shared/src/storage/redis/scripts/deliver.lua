-- deliver (preludes: store, in_flight). A send to every device of one recipient: the device
-- check and, per device, store-then-drain, in one atomic step, so a send is stored for the whole
-- device set or for none, and a message is never left waiting while its device is connected and
-- has fetched.
-- A full inbox keeps the newest: room is made from the oldest envelopes of the holder with the
-- largest share (the sender itself on a tie, so one sender overflowing an inbox gets exactly
-- first in, first out). New accounts (entries marked `~`) together hold at most their part of
-- an inbox, and make room only from their own envelopes: no number of throwaway accounts
-- evicts anyone else's.
-- Worst case per target: O(connections) to read them (at most MAX_CONNECTIONS_PER_USER), a
-- reclaim of lapsed leases (each envelope once per lease), the accounting hash read once
-- (a field pair per holder, at most INBOX_MAX), and at most `most_evictions` evictions, each a
-- scan of holders (short strings) from where the last one of that holder stopped.
-- Replies:
--   {'unknown_recipient'}                    no devices hash: the caller asks the user store
--   {'mismatched', missing, extra, targets}  the send's devices are not the recipient's
--                                            targets (sorted ids); nothing stored
--   {'stale', devices}                       these registration ids differ; nothing stored
--   {'done', outcome…}                       one outcome per target, in the send's order:
--     {'dropped'}                            not stored (online only and offline, or no room)
--     {'queued'}                             stored; the device is not connected
--     {'handed_over', connections, {entry}}  connected, nothing waiting: the entry handed over,
--                                            not stored
--     {'in_flight', connections, entries, ack-mode connections}
--                                            connected: these entries taken into flight, as a
--                                            fetch takes them (in_flight.lua settles them, or
--                                            puts them back after the lease; what is written to
--                                            an ack-mode connection stays until acknowledged)
-- One hash slot: {user}.

local devices_key = KEYS[1]            -- hash: `v` version, device id → `<registration id>:…`
local target_count = tonumber(ARGV[1])
local max = tonumber(ARGV[2])          -- INBOX_MAX
local ttl = ARGV[3]                    -- seconds
local now = tonumber(ARGV[4])          -- ms
local online_only = ARGV[5] == '1'
local pop_batch = tonumber(ARGV[6])    -- most envelopes taken out to push
local max_bytes = tonumber(ARGV[7])    -- INBOX_MAX_BYTES
local lease = tonumber(ARGV[8])        -- lease end (ms) of what is taken into flight
local self_device = ARGV[9]            -- the sending device on a send to one's own account, or ''
local legacy_form = ARGV[10] == '1'    -- the send form from before devices
local new_part_max = tonumber(ARGV[11])    -- what new accounts together may hold: envelopes
local new_part_bytes = tonumber(ARGV[12])  -- and bytes
local most_evictions = tonumber(ARGV[13])  -- per envelope

-- Then, per target t = 1 … target_count, TARGET_KEYS keys from KEYS[TARGET_KEYS_AT] on and
-- TARGET_FIELDS arguments from ARGV[TARGET_FIELDS_AT] on:
local TARGET_KEYS, TARGET_KEYS_AT = 7, 2
local TARGET_FIELDS, TARGET_FIELDS_AT = 3, 14
local function target(t)
  local k = TARGET_KEYS_AT + (t - 1) * TARGET_KEYS
  local a = TARGET_FIELDS_AT + (t - 1) * TARGET_FIELDS
  return {
    store = device_store(KEYS, k),     -- KEYS[k … k+4] (prelude_store.lua)
    conns_key = KEYS[k + 5],           -- sorted set: connection → registration end
    ack_conns_key = KEYS[k + 6],       -- set: its connections in ack mode
    device_id = ARGV[a],
    registration_id = ARGV[a + 1],     -- '' = unchecked
    entry = ARGV[a + 2],               -- `[~]<expires_at_ms>|<json>` (envelope.rs)
  }
end
local addressed = {}
for t = 1, target_count do addressed[t] = target(t) end

if redis.call('EXISTS', devices_key) == 0 then return {'unknown_recipient'} end
local registered, targets = {}, {}
local flat = redis.call('HGETALL', devices_key)
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
for _, a in ipairs(addressed) do
  local d, r = a.device_id, a.registration_id
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
if #missing > 0 or #extra > 0 then return {'mismatched', missing, extra, sorted} end
if #stale > 0 then return {'stale', stale} end

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
    if #conns == 0 then return {'dropped'} end
    return {'handed_over', conns, {env}}
  end
  -- Connected: what an ack-mode connection left unacknowledged past its lease goes first.
  if #conns > 0 then reclaim(s, now, max, max_bytes, ttl) end
  -- Connected, nothing waiting and nobody acknowledging: storing and taking it back would
  -- cancel out, so hand it over directly (the caller puts it in the inbox if the push fails).
  local idle = #conns > 0 and redis.call('LLEN', s.inbox) == 0
  if idle and #acking == 0 then
    return {'handed_over', conns, {env}}
  end
  -- Connected in ack mode with nothing waiting: what storing and taking it back would leave is
  -- this envelope alone in flight, so park it directly, within the caps (over one, it goes the
  -- ordinary way). What was in flight keeps its expiry: every ack renews it (ack.lua).
  if idle then
    local in_flight = redis.call('ZCARD', s.flight)
    if in_flight < max and parked_bytes(s) + #env <= max_bytes then
      park(s, lease, env)
      if in_flight == 0 then settle_flight(s, ttl) end
      return {'in_flight', conns, {env}, acking}
    end
  end
  settle(s)
  if #env > max_bytes then return {'dropped'} end
  drop_expired(s, now)
  if not make_room(s, env) then
    settle(s)
    return {'dropped'}
  end
  push_tail(s, env)
  touch(s, ttl)
  if #conns == 0 then return {'queued'} end
  local popped = pop_head(s, pop_batch)
  for _, e in ipairs(popped) do park(s, lease, e) end
  settle(s)
  settle_flight(s, ttl)
  return {'in_flight', conns, popped, acking}
end

local results = {'done'}
for _, a in ipairs(addressed) do
  table.insert(results, deliver(a.store, a.conns_key, a.ack_conns_key, a.entry))
end
return results
