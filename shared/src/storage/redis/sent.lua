-- Claims a send's id for its content unless the id is known (storage/redis/sent_log.rs).
-- KEYS: 1 the send's hash (`h` content hash, `a` the answer once given), slot {sender}
-- ARGV: 1 content hash, 2 seconds an unanswered claim lasts
-- Returns {'new'}, {'conflict'}, {'done', answer} or {'pending'}.
local h = redis.call('HGET', KEYS[1], 'h')
if not h then
  redis.call('HSET', KEYS[1], 'h', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if h ~= ARGV[1] then return {'conflict'} end
local a = redis.call('HGET', KEYS[1], 'a')
if a then return {'done', a} end
return {'pending'}
