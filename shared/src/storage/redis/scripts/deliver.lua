-- deliver (preludes: store, in_flight, deliver). A send to every device of one recipient: the
-- device check and, per device, store-then-drain (prelude_deliver.lua), in one atomic step, so a
-- send is stored for the whole device set or for none, and a message is never left waiting
-- while its device is connected and has fetched.
-- Worst case per target: one `deliver_one` (prelude_deliver.lua states its work).
-- Replies:
--   {'unknown_recipient'}                    no devices hash: the caller asks the user store
--   {'mismatched', missing, extra, targets}  the send's devices are not the recipient's
--                                            targets (sorted ids); nothing stored
--   {'stale', devices}                       these registration ids differ; nothing stored
--   {'done', outcome…, evicted, expired, bodies}
--                                            one outcome per target, in the send's order
--                                            (`deliver_one`'s, prelude_deliver.lua), then
--                                            how many envelopes it evicted from the inboxes
--                                            and dropped from them as expired, and the
--                                            evicted disappearing messages' envelope ids
--                                            (their bodies' keys, for the caller to delete)
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
    entry = ARGV[a + 2],               -- `[~]<expires_at_ms>|<json>`, or a disappearing
                                       -- message's `[~]<expires_at_ms>|@<id>|<sender>|<bytes>`
                                       -- (its envelope stored beforehand; envelope.rs)
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

local c = {
  max = max, max_bytes = max_bytes, ttl = ttl, now = now, lease = lease,
  online_only = online_only, pop_batch = pop_batch, new_part_max = new_part_max,
  new_part_bytes = new_part_bytes, most_evictions = most_evictions,
}
local results = {'done'}
for _, a in ipairs(addressed) do
  table.insert(results, deliver_one(c, a.store, a.conns_key, a.ack_conns_key, a.entry))
end
table.insert(results, removed.evicted)
table.insert(results, removed.expired)
table.insert(results, removed.bodies)
return results
