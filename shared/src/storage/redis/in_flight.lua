-- Envelopes in flight (after accounting.lua). A fetch moves each batch from the inbox into the
-- in-flight list (entries `<lease_until_ms>|<envelope>`) and removes it once written ('done'),
-- so a fetch that crashes or times out mid-write leaves its batch here instead of losing it; the
-- next 'take' after the lease puts such leftovers back at the head of the inbox. In ack mode the
-- written envelopes stay until acknowledged (ack.lua) or released ('release': the connection
-- closed), or the lease ends.
-- KEYS: 1 inbox list, 2 inbox accounting, 3 in-flight list (one hash slot: {user})
-- ARGV: 1 'take', 'done' or 'release', 2 lease until ms, 3 now ms, 4 max envelopes,
--       5 max bytes, 6 ttl seconds, then
--   take: 7 batch size. Returns the batch, oldest first.
--   done: 7 n, 8 … 7+n the envelopes of the batch to drop from the list, then those of them
--         not written (they go back to the head), oldest first.
--   release: nothing more.
local inbox, stats, flight = KEYS[1], KEYS[2], KEYS[3]
local lease, now = ARGV[2], tonumber(ARGV[3])
local max, max_bytes, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

if ARGV[1] == 'done' then
  local n = tonumber(ARGV[7])
  for i = 8, 7 + n do redis.call('LREM', flight, 1, lease .. '|' .. ARGV[i]) end
  local unsent = {}
  for i = 8 + n, #ARGV do unsent[#unsent + 1] = ARGV[i] end
  put_back(inbox, stats, unsent, max, max_bytes, ttl)
  return {}
end

if ARGV[1] == 'release' then
  reclaim(inbox, stats, flight, nil, max, max_bytes, ttl)
  return {}
end

reclaim(inbox, stats, flight, now, max, max_bytes, ttl)
local batch = redis.call('LPOP', inbox, ARGV[7]) or {}
for _, e in ipairs(batch) do
  account(stats, e, -1)
  redis.call('RPUSH', flight, lease .. '|' .. e)
end
settle(inbox, stats)
if #batch > 0 then redis.call('EXPIRE', flight, ttl) end
return batch
