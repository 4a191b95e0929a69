-- Envelopes in flight (after store.lua). A fetch moves each batch from the inbox into flight
-- (parked by id, with a lease) and removes it once written ('done'), so a fetch that crashes
-- or times out mid-write leaves its batch there instead of losing it; the next 'take' after the
-- lease puts such leftovers back at the head of the inbox. In ack mode the written envelopes
-- stay until acknowledged (ack.lua) or released ('release': the connection closed), or the
-- lease ends.
-- Worst case: 'take' and 'done' O(1) per envelope of the batch (at most POP_BATCH), plus a
-- reclaim of what a lapsed lease left (each envelope once per lease); 'release' moves back
-- what the device had in flight (at most INBOX_MAX envelopes, INBOX_MAX_BYTES).
-- KEYS: 1-5 the device store (store.lua: inbox, holders, stats, flight, parked), 6 the
--       in-flight list of relays before envelopes were parked by id (only emptied)
-- ARGV: 1 'take', 'done' or 'release', 2 lease until ms, 3 now ms, 4 max envelopes,
--       5 max bytes, 6 ttl seconds, then
--   take: 7 batch size. Returns the batch, oldest first.
--   done: 7 n, 8 … 7+n the envelopes of the batch to drop from flight, then those of them
--         not written (they go back to the head), oldest first.
--   release: nothing more.
local s, legacy = device_store(KEYS, 1), KEYS[6]
local lease, now = tonumber(ARGV[2]), tonumber(ARGV[3])
local max, max_bytes, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

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

if ARGV[1] == 'done' then
  local n, mine = tonumber(ARGV[7]), {}
  for i = 8, 7 + n do
    -- Only this taker's lease: after it lapsed, the envelope may be another taker's (or back in
    -- the inbox), and is not put back twice.
    local id = id_of(ARGV[i])
    if tonumber(redis.call('ZSCORE', s.flight, id)) == lease and unpark(s, id) then
      mine[id] = true
    end
  end
  local unsent = {}
  for i = 8 + n, #ARGV do
    if mine[id_of(ARGV[i])] then unsent[#unsent + 1] = ARGV[i] end
  end
  put_back(s, unsent, max, max_bytes, ttl)
  settle_flight(s, ttl)
  return {}
end

if ARGV[1] == 'release' then
  drain_legacy()
  reclaim(s, nil, max, max_bytes, ttl)
  return {}
end

drain_legacy()
reclaim(s, now, max, max_bytes, ttl)
local batch = pop_head(s, tonumber(ARGV[7]))
for _, e in ipairs(batch) do park(s, lease, e) end
settle(s)
if #batch > 0 then settle_flight(s, ttl) end
return batch
