-- inbox_summary: what one device's store holds, in counts and times only, for an account
-- export. Reads; writes nothing. No body or sender leaves the script: of the two entries it
-- reads (the inbox's ends) it returns two numbers each.
-- Worst case: O(1): LLEN, ZCARD, two HGETs and two LINDEXes (each entry at most
-- MESSAGE_MAX_BYTES plus its envelope, matched once).
-- Reply: {'summary', queued, bytes, in_flight, in_flight_bytes,
--         oldest_expires_ms, oldest_sent_ms, newest_expires_ms, newest_sent_ms}
--   a time is 0 where there is none: an empty inbox, or an entry that does not carry `sent_at`
--   (a pointer to a body stored elsewhere).
-- One hash slot: {user}.

local inbox = KEYS[1]                  -- list of entries `[~]<expires_at_ms>|…`, oldest first (envelope.rs)
local stats = KEYS[2]                  -- hash: `b` the inbox's bytes as accounted (prelude_store.lua)
local flight = KEYS[3]                 -- sorted set: envelope id → lease end (prelude_in_flight.lua)
local parked = KEYS[4]                 -- hash: envelope id → entry; `#b` their bytes

local function number(v)
  return math.max(0, tonumber(v) or 0)
end

-- An entry's expiry and the `sent_at` of its client JSON (the body is base64 and the ids are
-- UUIDs, so the first `"sent_at":` is the envelope's own).
local function times(e)
  if not e then return 0, 0 end
  return number(string.match(e, '^~?(%d+)|')), number(string.match(e, '"sent_at":(%d+)'))
end

local oldest_exp, oldest_sent = times(redis.call('LINDEX', inbox, 0) or nil)
local newest_exp, newest_sent = times(redis.call('LINDEX', inbox, -1) or nil)
return {'summary', redis.call('LLEN', inbox), number(redis.call('HGET', stats, 'b')),
        redis.call('ZCARD', flight), number(redis.call('HGET', parked, '#b')),
        oldest_exp, oldest_sent, newest_exp, newest_sent}
