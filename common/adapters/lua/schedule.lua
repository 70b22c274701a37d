-- The leader's first step for a message it moved from queue:pending to queue:scheduling:
-- PENDING -> SCHEDULED, fenced by the leader's epoch. A hand-pushed message has no task hash
-- yet: create it here, and replace the raw message on queue:scheduling by the normalised one
-- (with its taskId), so if the leader dies now the next one recovers the *same* task.
-- A deposed leader (epoch below the fence) changes nothing at all: the message stays on
-- queue:scheduling, where the current leader's recovery sweep finds it.
-- KEYS: 1 task, 2 history, 3 stats, 4 fence, 5 scheduling list, 6 index,
--       7 request key (or a dummy), 8 request fingerprint hash (or a dummy)
-- ARGV: 1 raw message, 2 normalised message, 3 hash fields JSON, 4 epoch, 5 actor, 6 now,
--       7 taskId, 8 has a requestId (1/0), 9 the request's fingerprint
local epoch = tonumber(ARGV[4])
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if epoch < fence then
  count(KEYS[3], 'rejected_stale_epoch')
  return {0, 'stale_epoch', '', 0}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  local verdict, existing = claim_request(KEYS[7], ARGV[8], ARGV[7], KEYS[8], ARGV[9])
  if verdict == 'duplicate' then
    -- Same requestId as a task that exists: this message is that task, already submitted.
    count(KEYS[3], 'duplicate_request')
    redis.call('LREM', KEYS[5], 1, ARGV[1])
    return {0, 'duplicate_request', '', 0}
  elseif verdict == 'conflict' then
    -- The requestId names a task made from another request: a mistake the caller
    -- dead-letters with the reason (the message stays on queue:scheduling until then).
    count(KEYS[3], 'idempotency_conflict')
    return {0, 'idempotency_conflict', '', 0, existing}
  end
  create_task(KEYS[1], KEYS[2], KEYS[6], ARGV[7], ARGV[3], ARGV[6], ARGV[5],
              'created from queue message')
end
if ARGV[1] ~= ARGV[2] then
  redis.call('LREM', KEYS[5], 1, ARGV[1])
  redis.call('LPUSH', KEYS[5], ARGV[2])
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt')) or 1
local r = transition(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 'SCHEDULED', attempt, epoch, ARGV[5],
                     ARGV[6], {}, {'agentId'}, '')
if r[1] == 0 then
  -- Not schedulable: cancelled, finished, or a duplicate copy of a message whose task is
  -- already placed. Drop this copy; the task's own state is untouched.
  redis.call('LREM', KEYS[5], 1, ARGV[2])
end
return r
