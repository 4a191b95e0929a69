-- `ack` of a connection in ack mode (after bucket.lua): deletes the in-flight entries of the
-- device whose envelopes have these ids. Nothing here reads the inbox or its accounting: an
-- acknowledged envelope left them when it was taken into flight (in_flight.lua, deliver.lua).
-- An ack that deletes nothing is charged to the frame rate limit's bucket in the same step; one
-- that deletes is not: each envelope is deleted once, and a paid send stored it.
-- KEYS: 1 in-flight list (entries `<lease_until_ms>|<expires_at_ms>|<envelope JSON>`), 2 the
--       frame rate limit's bucket (one hash slot: {user})
-- ARGV: 1 ttl seconds, 2 bucket capacity, 3 refill per ms, 4 cost, 5… envelope ids
-- Returns {allowed (1/0), retry after ms, how many entries were deleted}.
local flight, ttl = KEYS[1], ARGV[1]
local ids, wanted = {}, 0
for i = 5, #ARGV do
  if not ids[ARGV[i]] then wanted = wanted + 1 end
  ids[ARGV[i]] = true
end
-- Acknowledged envelopes are the oldest in flight as a rule, so the first read takes as many
-- entries as there are ids (every entry read is copied into the script: envelopes are large),
-- and only what is still missing after it is looked for further on, in chunks.
local found, doomed, i, size, len, prefix = 0, {}, 0, wanted, nil, true
while found < wanted do
  local chunk = redis.call('LRANGE', flight, i, i + size - 1)
  for j, item in ipairs(chunk) do
    -- `<lease>|<expiry>|{"id":"<uuid>",…}`: the envelope's id is its first field.
    local id = string.match(item, '^%d+|%d+|{"id":"([^"]*)"')
    if id and ids[id] then
      doomed[#doomed + 1] = item
      ids[id] = nil
      found = found + 1
      -- Still the head of the list, entry for entry, so far?
      prefix = prefix and i + j == found
    end
  end
  if #chunk < size then
    len = i + #chunk
    break
  end
  i, size = i + size, 32
end
local deleted = #doomed
if deleted == 0 then
  local charged = take_tokens(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
  if charged[1] == 0 then return {0, charged[2], 0} end
  return {1, 0, 0}
end
-- The usual case, the oldest envelopes acknowledged, is one trim; any other, one removal each.
if prefix then
  redis.call('LTRIM', flight, deleted, -1)
else
  for _, item in ipairs(doomed) do redis.call('LREM', flight, 1, item) end
end
-- A list that stays has its expiry renewed here, not by each envelope put in it (deliver.lua).
if len == nil or len > deleted then redis.call('EXPIRE', flight, ttl) end
return {1, 0, deleted}
