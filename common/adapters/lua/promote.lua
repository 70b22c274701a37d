-- Move retried tasks whose backoff has elapsed from the delayed zset to the pending queue.
-- KEYS: 1 delayed zset, 2 pending queue   ARGV: 1 now, 2 max to move
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, msg in ipairs(due) do
  redis.call('ZREM', KEYS[1], msg)
  redis.call('RPUSH', KEYS[2], msg)
end
return #due
