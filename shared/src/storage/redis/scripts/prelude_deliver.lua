-- Prelude `deliver` (after prelude_store.lua and prelude_in_flight.lua): one envelope for one
-- device, stored and, when the device is connected, taken for immediate push: the step
-- deliver.lua takes for every device of a send, and deliver_shared.lua for every device of one
-- member of a group send. `c` holds the send's settings, as each script reads them from ARGV:
--   max, max_bytes     INBOX_MAX, INBOX_MAX_BYTES
--   ttl                seconds
--   now, lease         ms; lease end of what is taken into flight
--   online_only        boolean
--   pop_batch          most envelopes taken out to push
--   new_part_max, new_part_bytes   what new accounts together may hold of an inbox
--   most_evictions     per envelope
-- A full inbox keeps the newest: room is made from the oldest envelopes of the holder with the
-- largest share (the sender itself on a tie, so one sender overflowing an inbox gets exactly
-- first in, first out). New accounts (entries marked `~`) together hold at most their part of
-- an inbox, and make room only from their own envelopes: no number of throwaway accounts
-- evicts anyone else's.
-- Outcomes of `deliver_one`:
--   {'dropped'}                            not stored (online only and offline, or no room)
--   {'queued'}                             stored; the device is not connected
--   {'handed_over', connections, {entry}}  connected, nothing waiting: the entry handed over,
--                                          not stored
--   {'in_flight', connections, entries, ack-mode connections}
--                                          connected: these entries taken into flight, as a
--                                          fetch takes them (in_flight.lua settles them, or
--                                          puts them back after the lease; what is written to
--                                          an ack-mode connection stays until acknowledged)
-- Work per call: O(connections) to read them (at most MAX_CONNECTIONS_PER_USER), a reclaim of
-- lapsed leases (each envelope once per lease), the accounting hash read once (a field pair
-- per holder, at most INBOX_MAX), and at most `most_evictions` evictions, each a scan of
-- holders (short strings) from where the last one of that holder stopped. An entry's bytes
-- (`weight`, prelude_store.lua) cost one anchored match of its first characters.

-- What the `deliver_one` calls of this step removed from inboxes, for the caller's reply:
-- envelopes evicted to make room (an inbox cap), expired ones dropped from a head, and the
-- envelope ids of the evicted disappearing messages (their bodies' keys, in other slots, which
-- the caller deletes: an evicted message's body is not left to hold memory until its expiry).
local removed = {evicted = 0, expired = 0, bodies = {}}

-- Makes room for `env` in the device's inbox; false when it cannot be stored.
local function make_room(c, s, env)
  local me, size = holder_of(env), weight(env)
  local new_sender = is_new(me)
  -- Envelopes in flight (awaiting an acknowledgement, or being written) count toward the caps.
  local function full()
    return redis.call('LLEN', s.inbox) + redis.call('ZCARD', s.flight) >= c.max
      or stat(s, 'b') + parked_bytes(s) + size > c.max_bytes
  end
  local function over_part()
    return new_sender
      and (stat(s, 'n:~') + 1 > c.new_part_max or stat(s, 'b:~') + size > c.new_part_bytes)
  end
  if not full() and not over_part() then return true end
  local shares = (not new_sender) and read_shares(s)
  local hints = {}
  for _ = 1, c.most_evictions do
    local victim = me
    if shares then victim = largest(shares, c.max, c.max_bytes, me) end
    if not victim then return false end
    local at, bytes, entry = remove_oldest_of(s, victim, hints[victim])
    if at then
      -- An evicted disappearing message's body is in another slot: the caller deletes it.
      local body = own_body_of(entry)
      if body then table.insert(removed.bodies, body) end
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


local function deliver_one(c, s, conns_key, acks_key, env)
  redis.call('ZREMRANGEBYSCORE', conns_key, '-inf', c.now)
  local conns = redis.call('ZREVRANGE', conns_key, 0, -1)
  -- The ack-mode connections still live: those of the set among the live ones just read.
  local acking = {}
  local members = redis.call('SMEMBERS', acks_key)
  if #members > 0 then
    local live = {}
    for _, conn in ipairs(conns) do live[conn] = true end
    for _, conn in ipairs(members) do
      if live[conn] then table.insert(acking, conn) end
    end
  end
  if c.online_only then
    if #conns == 0 then return {'dropped'} end
    return {'handed_over', conns, {env}}
  end
  -- Connected: what an ack-mode connection left unacknowledged past its lease goes first.
  if #conns > 0 then reclaim(s, c.now, c.max, c.max_bytes, c.ttl) end
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
    if in_flight < c.max and parked_bytes(s) + weight(env) <= c.max_bytes then
      park(s, c.lease, env)
      if in_flight == 0 then settle_flight(s, c.ttl) end
      return {'in_flight', conns, {env}, acking}
    end
  end
  settle(s)
  if weight(env) > c.max_bytes then return {'dropped'} end
  local waiting = redis.call('LLEN', s.inbox)
  drop_expired(s, c.now)
  local live = redis.call('LLEN', s.inbox)
  removed.expired = removed.expired + waiting - live
  local room = make_room(c, s, env)
  -- Evictions only remove from the inbox, even when they leave too little room.
  removed.evicted = removed.evicted + live - redis.call('LLEN', s.inbox)
  if not room then
    settle(s)
    return {'dropped'}
  end
  push_tail(s, env)
  touch(s, c.ttl)
  if #conns == 0 then return {'queued'} end
  local popped = pop_head(s, c.pop_batch)
  for _, e in ipairs(popped) do park(s, c.lease, e) end
  settle(s)
  settle_flight(s, c.ttl)
  return {'in_flight', conns, popped, acking}
end
