-- Move retried tasks whose backoff has elapsed from the delayed zset to the pending queue.
-- Stage 1 agents run it unfenced (any agent may: ZREM first makes each move happen once).
-- The stage 2 leader passes its epoch and the fence: a deposed leader moves nothing.
-- KEYS: 1 delayed zset, 2 pending queue[, 3 fence]   ARGV: 1 now, 2 max to move[, 3 epoch]
-- Returns how many were moved, or -1 if the epoch is below the fence.
if KEYS[3] and tonumber(ARGV[3]) < tonumber(redis.call('GET', KEYS[3]) or '0') then
  return -1
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, msg in ipairs(due) do
  redis.call('ZREM', KEYS[1], msg)
  redis.call('RPUSH', KEYS[2], msg)
end
return #due
