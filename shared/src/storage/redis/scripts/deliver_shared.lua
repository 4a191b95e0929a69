-- deliver_shared (preludes: store, in_flight, deliver). One member's part of a group send, in
-- one atomic step: for each of the member's devices in the send, its entry (a pointer to the
-- envelope stored once, envelope.rs) stored and, when the device is connected, taken for
-- immediate push (`deliver_one`, prelude_deliver.lua). The relay checked the devices against
-- the member's list before this step: a device removed or registered again since gets nothing
-- ('gone'), so no device outside the list the send was checked against is reached. With an
-- envelope id to remember, a member given that envelope before (a repeat after a failure part
-- way) is given nothing again.
-- Worst case per target: one `deliver_one` (prelude_deliver.lua states its work); plus one
-- sorted-set insert and a trim of the marks (at most `most_marks`, the oldest dropped first).
-- Replies:
--   {'already'}          the member was given this envelope before; nothing stored
--   {'done', outcome…, evicted, expired, bodies}
--                        one outcome per target, in the send's order: `deliver_one`'s, or
--                        {'gone'} (the device left the list or was registered again); then
--                        how many envelopes it evicted from the inboxes and dropped from them
--                        as expired, and the evicted disappearing messages' envelope ids (their
--                        bodies' keys, for the caller to delete)
-- One hash slot: {user}.

local devices_key = KEYS[1]            -- hash: `v` version, device id → `<registration id>:…`
local marks_key = KEYS[2]              -- sorted set: envelope id → when given (ms)
local target_count = tonumber(ARGV[1])
local max = tonumber(ARGV[2])          -- INBOX_MAX
local ttl = ARGV[3]                    -- seconds
local now = tonumber(ARGV[4])          -- ms
local online_only = ARGV[5] == '1'
local pop_batch = tonumber(ARGV[6])    -- most envelopes taken out to push
local max_bytes = tonumber(ARGV[7])    -- INBOX_MAX_BYTES
local lease = tonumber(ARGV[8])        -- lease end (ms) of what is taken into flight
local new_part_max = tonumber(ARGV[9])     -- what new accounts together may hold: envelopes
local new_part_bytes = tonumber(ARGV[10])  -- and bytes
local most_evictions = tonumber(ARGV[11])  -- per envelope
local mark = ARGV[12]                  -- the envelope id to remember, or '' (not a repeatable send)
local mark_ms = tonumber(ARGV[13])     -- how long a mark is kept
local most_marks = tonumber(ARGV[14])  -- marks kept per member

-- Then, per target t = 1 … target_count, TARGET_KEYS keys from KEYS[TARGET_KEYS_AT] on and
-- TARGET_FIELDS arguments from ARGV[TARGET_FIELDS_AT] on:
local TARGET_KEYS, TARGET_KEYS_AT = 7, 3
local TARGET_FIELDS, TARGET_FIELDS_AT = 3, 15
local function target(t)
  local k = TARGET_KEYS_AT + (t - 1) * TARGET_KEYS
  local a = TARGET_FIELDS_AT + (t - 1) * TARGET_FIELDS
  return {
    store = device_store(KEYS, k),     -- KEYS[k … k+4] (prelude_store.lua)
    conns_key = KEYS[k + 5],           -- sorted set: connection → registration end
    ack_conns_key = KEYS[k + 6],       -- set: its connections in ack mode
    device_id = ARGV[a],
    registration_id = ARGV[a + 1],     -- the one the send was checked with
    entry = ARGV[a + 2],               -- `[~]<expires_at_ms>|@<envelope id>|<sender>`
  }
end

if mark ~= '' and redis.call('ZSCORE', marks_key, mark) then return {'already'} end

local registered = {}
local flat = redis.call('HGETALL', devices_key)
for i = 1, #flat, 2 do
  if flat[i] ~= 'v' then registered[flat[i]] = string.match(flat[i + 1], '^(%d+)') end
end

local c = {
  max = max, max_bytes = max_bytes, ttl = ttl, now = now, lease = lease,
  online_only = online_only, pop_batch = pop_batch, new_part_max = new_part_max,
  new_part_bytes = new_part_bytes, most_evictions = most_evictions,
}
local results = {'done'}
for t = 1, target_count do
  local a = target(t)
  if registered[a.device_id] ~= a.registration_id then
    table.insert(results, {'gone'})
  else
    table.insert(results, deliver_one(c, a.store, a.conns_key, a.ack_conns_key, a.entry))
  end
end

if mark ~= '' then
  redis.call('ZADD', marks_key, now, mark)
  redis.call('ZREMRANGEBYSCORE', marks_key, '-inf', now - mark_ms)
  local over = redis.call('ZCARD', marks_key) - most_marks
  if over > 0 then redis.call('ZREMRANGEBYRANK', marks_key, 0, over - 1) end
  redis.call('PEXPIRE', marks_key, mark_ms)
end
table.insert(results, removed.evicted)
table.insert(results, removed.expired)
table.insert(results, removed.bodies)
return results
