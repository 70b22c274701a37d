-- Create a task and enqueue it, or return the task an earlier submit with the same requestId
-- created. One script, so a crash can never leave a task stored but not queued (or queued
-- twice), and two submits racing with one requestId cannot both create a task or both pass
-- the fingerprint check.
-- KEYS: 1 task, 2 history, 3 queue, 4 index, 5 request key (or a dummy),
--       6 request fingerprint hash (or a dummy)
-- ARGV: 1 taskId, 2 hash fields JSON, 3 queue message, 4 now, 5 actor, 6 has request id (0/1),
--       7 fingerprint of this request (common/domain/idempotency.py)
-- Returns {taskId, 1} created; {existing taskId, 0} the same request again;
-- {existing taskId, 0, 'conflict'} the key names a task created from a different request.
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[5])
  if existing then
    local stored = redis.call('HMGET', KEYS[6], 'taskId', 'fingerprint')
    -- Compared only if it was written for the task the key names: a key set before
    -- fingerprints were stored (or by a hand-pushed message) has none and still matches any
    -- request, as it always did; a fingerprint left from an older owner of the key is stale.
    if stored[1] == existing and stored[2] and stored[2] ~= ARGV[7] then
      return {existing, 0, 'conflict'}
    end
    return {existing, 0}
  end
  redis.call('SET', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[6], 'taskId', ARGV[1], 'fingerprint', ARGV[7])
end
create_task(KEYS[1], KEYS[2], KEYS[4], ARGV[1], ARGV[2], ARGV[4], ARGV[5], '')
redis.call('LPUSH', KEYS[3], ARGV[3])
return {ARGV[1], 1}
