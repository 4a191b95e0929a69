-- Envelopes in flight (after accounting.lua). A fetch moves each batch from the inbox into the
-- in-flight list (entries `<lease_until_ms>|<envelope>`) and removes it once written ('done'),
-- so a fetch that crashes or times out mid-write leaves its batch here instead of losing it; the
-- next 'take' after the lease puts such leftovers back at the head of the inbox. In ack mode the
-- written envelopes stay until acknowledged ('ack') or released ('release': the connection
-- closed), or the lease ends.
-- KEYS: 1 inbox list, 2 inbox accounting, 3 in-flight list, 4 ('ack' only) the frame rate
--       limit's bucket (one hash slot: {user})
-- ARGV: 1 'take', 'done', 'ack' or 'release', 2 lease until ms, 3 now ms, 4 max envelopes,
--       5 max bytes, 6 ttl seconds, then
--   take: 7 batch size. Returns the batch, oldest first.
--   done: 7 n, 8 … 7+n the envelopes of the batch to drop from the list, then those of them
--         not written (they go back to the head), oldest first.
--   ack: 7 bucket capacity, 8 refill per ms, 9 cost, 10… envelope ids. An ack that deletes
--        nothing is charged to the bucket in the same step (bucket.lua); one that deletes is
--        not: each envelope is deleted once, and a paid send stored it. Returns {allowed (1/0),
--        retry after ms, how many entries were deleted}.
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

if ARGV[1] == 'ack' then
  local ids, wanted = {}, 0
  for i = 10, #ARGV do
    if not ids[ARGV[i]] then wanted = wanted + 1 end
    ids[ARGV[i]] = true
  end
  -- Acknowledged envelopes are the oldest in flight as a rule: read from the head in chunks and
  -- stop once every id is found, rather than reading the whole list.
  local found, doomed, i = 0, {}, 0
  while found < wanted do
    local chunk = redis.call('LRANGE', flight, i, i + 31)
    if #chunk == 0 then break end
    for _, item in ipairs(chunk) do
      -- `<lease>|<expiry>|{"id":"<uuid>",…}`: the envelope's id is its first field.
      local id = string.match(item, '^%d+|%d+|{"id":"([^"]*)"')
      if id and ids[id] then
        doomed[#doomed + 1] = item
        ids[id] = nil
        found = found + 1
      end
    end
    i = i + 32
  end
  local deleted = 0
  for _, item in ipairs(doomed) do deleted = deleted + redis.call('LREM', flight, 1, item) end
  if deleted == 0 then
    local charged = take_tokens(KEYS[4], tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
    if charged[1] == 0 then return {0, charged[2], 0} end
  end
  return {1, 0, deleted}
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
