-- Takes an account's device list (from the user store, which holds the truth) unless the copy
-- here is as new: lists are versioned, so whichever order concurrent links and removals arrive
-- in, the newest stays. A device that left the list, or whose value changed (its id reused by a
-- newly linked device), loses its inbox, holders, accounting, envelopes in flight and connection sets: what
-- was queued for the old device is no use to the new one, nor what it sent with ids. (Its
-- sockets are closed by the caller.)
-- KEYS: 1 devices hash (slot {user}); the device keys are named from ARGV[1] in the same slot,
--       as RedisKeys::device_key names them
-- ARGV: 1 `<prefix>{<user>}`, 2 version, 3… pairs of device id and `<registration id>:<created>`
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current >= tonumber(ARGV[2]) then return 0 end
local function key(d, name)
  if d == '1' then return ARGV[1] .. ':' .. name end
  return ARGV[1] .. ':d' .. d .. ':' .. name
end
local new = {}
for i = 3, #ARGV, 2 do new[ARGV[i]] = ARGV[i + 1] end
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do
  local d = old[i]
  if d ~= 'v' and new[d] ~= old[i + 1] then
    for _, name in ipairs({'inbox', 'inbox-holders', 'inbox-senders', 'in-flight',
        'in-flight-envelopes', 'inflight', 'conns', 'conn-order', 'ack-conns', 'sent',
        'sent-times'}) do
      redis.call('DEL', key(d, name))
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], unpack(ARGV, 3))
return 1
