-- Drops expired envelopes from the head (the oldest) and counts what is left. An entry is
-- `<expires_at_ms>|<json>` (storage/redis/envelope.rs writes it).
-- KEYS: 1 inbox list. ARGV: 1 now ms.
local now = tonumber(ARGV[1])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return 0 end
  local exp = tonumber(string.match(head, '^(%d+)|'))
  if exp and exp <= now then redis.call('LPOP', KEYS[1]) else break end
end
return redis.call('LLEN', KEYS[1])
