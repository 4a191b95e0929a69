-- in_flight (preludes: store, in_flight). A fetch moves each batch from the inbox into flight
-- (parked by id, with a lease) and removes it once written ('settle'), so a fetch that crashes
-- or times out mid-write leaves its batch there instead of losing it; the next 'take' after the
-- lease puts such leftovers back at the head of the inbox. In ack mode the written envelopes
-- stay until acknowledged (ack.lua) or released ('release': the connection closed), or the
-- lease ends.
-- Worst case: 'take' and 'settle' O(1) per envelope of the batch (at most POP_BATCH), plus a
-- reclaim of what a lapsed lease left (each envelope once per lease); 'release' moves back
-- what the device had in flight (at most INBOX_MAX envelopes, INBOX_MAX_BYTES).
-- Replies: 'take' {'taken', entries} (the batch, oldest first); 'settle' {'settled'};
-- 'release' {'released'}.
-- One hash slot: {user}.

local s = device_store(KEYS, 1)        -- KEYS[1 … 5] (prelude_store.lua)
local legacy = KEYS[6]                 -- the in-flight list of relays before envelopes were
                                       -- parked by id (only emptied)
local op = ARGV[1]                     -- 'take', 'settle' or 'release'
local lease = tonumber(ARGV[2])        -- lease end (ms): of the batch taken, or settled
local now = tonumber(ARGV[3])          -- ms
local max = tonumber(ARGV[4])          -- INBOX_MAX
local max_bytes = tonumber(ARGV[5])    -- INBOX_MAX_BYTES
local ttl = ARGV[6]                    -- seconds
-- Then, by op:
--   take     ARGV[7] the batch size
--   settle   ARGV[7] n, ARGV[8 … 7+n] the batch's entries to drop from flight, then
--            ARGV[8+n …] those of them not written (back to the head), oldest first
--   release  nothing
local OP_ARGS_AT = 7

-- Entries `<lease_until_ms>|<entry>` an older relay left in flight go back to the inbox once.
local function drain_legacy()
  if redis.call('EXISTS', legacy) == 0 then return end
  local envs = {}
  for _, item in ipairs(redis.call('LRANGE', legacy, 0, -1)) do
    local e = string.match(item, '^%d+|(.*)$')
    if e then envs[#envs + 1] = e end
  end
  redis.call('DEL', legacy)
  put_back(s, envs, max, max_bytes, ttl)
end

if op == 'settle' then
  local n = tonumber(ARGV[OP_ARGS_AT])  -- entries in the batch
  local batch_at = OP_ARGS_AT + 1
  local mine = {}
  for i = batch_at, batch_at + n - 1 do
    -- Only this taker's lease: after it lapsed, the envelope may be another taker's (or back in
    -- the inbox), and is not put back twice.
    local id = id_of(ARGV[i])
    if tonumber(redis.call('ZSCORE', s.flight, id)) == lease and unpark(s, id) then
      mine[id] = true
    end
  end
  local unsent = {}
  for i = batch_at + n, #ARGV do
    if mine[id_of(ARGV[i])] then unsent[#unsent + 1] = ARGV[i] end
  end
  put_back(s, unsent, max, max_bytes, ttl)
  settle_flight(s, ttl)
  return {'settled'}
end

if op == 'release' then
  drain_legacy()
  reclaim(s, nil, max, max_bytes, ttl)
  return {'released'}
end

-- op == 'take'
drain_legacy()
reclaim(s, now, max, max_bytes, ttl)
local batch_size = tonumber(ARGV[OP_ARGS_AT])
local batch = pop_head(s, batch_size)
for _, e in ipairs(batch) do park(s, lease, e) end
settle(s)
if #batch > 0 then settle_flight(s, ttl) end
return {'taken', batch}
