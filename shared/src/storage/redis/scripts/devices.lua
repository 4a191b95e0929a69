-- devices. Takes an account's device list (from the user store, which holds the truth) unless
-- the copy here is as new: lists are versioned, so whichever order concurrent links and removals
-- arrive in, the newest stays. A device that left the list, or whose value changed (its id
-- reused by a newly linked device), loses its inbox, holders, accounting, envelopes in flight
-- and connection sets: what was queued for the old device is no use to the new one, nor what it
-- sent with ids. (Its sockets are closed by the caller.)
-- Worst case: O(devices) deletes (at most MAX_DEVICES), only when the list's version grows.
-- Replies: {'taken'} (the list replaced the copy), {'kept'} (the copy was as new).
-- One hash slot: {user}; the device keys are named from `user_base` in that slot, as
-- RedisKeys::device_key names them.

local devices_key = KEYS[1]            -- hash: `v` version, device id → `<registration id>:<created>`
local user_base = ARGV[1]              -- `<prefix>{<user>}`
local version = ARGV[2]
local DEVICES_AT = 3                   -- ARGV[3 …]: pairs of device id and
                                       -- `<registration id>:<created>`

local current = tonumber(redis.call('HGET', devices_key, 'v') or '0')
if current >= tonumber(version) then return {'kept'} end
local function key(d, name)
  if d == '1' then return user_base .. ':' .. name end
  return user_base .. ':d' .. d .. ':' .. name
end
local new = {}
for i = DEVICES_AT, #ARGV, 2 do new[ARGV[i]] = ARGV[i + 1] end
local old = redis.call('HGETALL', devices_key)
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
redis.call('DEL', devices_key)
redis.call('HSET', devices_key, 'v', version, unpack(ARGV, DEVICES_AT))
return {'taken'}
