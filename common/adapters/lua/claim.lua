-- Stage 1 claim, right after BLMOVE put the raw message on this agent's processing list.
-- A hand-pushed message has no task hash yet: create it here. The raw message in the
-- processing list is replaced by the normalised one (with its taskId), so if this agent dies
-- now the reaper re-queues the *same* task instead of minting a second one.
-- Stage 2 claim: the message was dispatched to this agent's own list by the leader and carries
-- the attempt and epoch it was dispatched with. It is claimable (DISPATCHED -> RUNNING) only
-- if that attempt is still the task's current one and the task is still placed on this agent:
-- a message left over from before a failover, or a restarted agent's stale inbox, is refused.
-- Returns {accepted, reason, status, attempt[, task fields as HGETALL gives them if accepted]}.
-- KEYS: 1 task, 2 history, 3 stats, 4 processing list, 5 index, 6 request key (or a dummy),
--       7 request fingerprint hash (or a dummy)
-- ARGV: 1 raw message, 2 normalised message, 3 hash fields JSON (for creation; '' = only
--       claim a task that exists), 4 agentId,
--       5 now, 6 taskId, 7 track (1 = keep the message on the processing list),
--       8 dispatched attempt ('' for a stage 1 message), 9 dispatched epoch,
--       10 has a requestId (1/0), 11 the request's fingerprint
-- --8<-- [start:dispatched]
local dispatched = ARGV[8] ~= nil and ARGV[8] ~= ''
if dispatched then
  local cur = redis.call('HMGET', KEYS[1], 'attempt', 'agentId', 'status')
  local attempt = tonumber(ARGV[8])
  -- A wrong attempt is reported as stale by transition() below; check the owner only when
  -- the attempt matches, so each rejection is counted once under its real cause.
  if cur[1] and tonumber(cur[1]) == attempt and cur[2] ~= ARGV[4] then
    count(KEYS[3], 'rejected_wrong_agent')
    if ARGV[7] == '1' then redis.call('LREM', KEYS[4], 1, ARGV[2]) end
    return {0, 'wrong_agent', cur[3], attempt}
  end
  local r = transition(KEYS[1], KEYS[2], KEYS[3], '', 'RUNNING', attempt, tonumber(ARGV[9]) or 0,
                       ARGV[4], ARGV[5], {}, {'result', 'error', 'exitCode'}, '')
  if r[1] == 0 and ARGV[7] == '1' then redis.call('LREM', KEYS[4], 1, ARGV[2]) end
  if r[1] == 1 then r[5] = redis.call('HGETALL', KEYS[1]) end
  return r
end
-- --8<-- [end:dispatched]
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- The fast path (no fields given) claims only a task that exists; the caller then parses
  -- the message in full and calls again.
  if ARGV[3] == '' then return {0, 'not_created', '', 0} end
  local verdict, existing = claim_request(KEYS[6], ARGV[10], ARGV[6], KEYS[7], ARGV[11])
  if verdict == 'duplicate' then
    -- Same requestId as a task that exists: this message is that task, already submitted.
    count(KEYS[3], 'duplicate_request')
    if ARGV[7] == '1' then redis.call('LREM', KEYS[4], 1, ARGV[1]) end
    return {0, 'duplicate_request', '', 0}
  elseif verdict == 'conflict' then
    -- The requestId names a task made from another request: a mistake the caller
    -- dead-letters with the reason (the message stays on the processing list until then).
    count(KEYS[3], 'idempotency_conflict')
    return {0, 'idempotency_conflict', '', 0, existing}
  end
  create_task(KEYS[1], KEYS[2], KEYS[5], ARGV[6], ARGV[3], ARGV[5], 'queue:' .. ARGV[4],
              'created from queue message')
end
if ARGV[7] == '1' and ARGV[1] ~= ARGV[2] then
  redis.call('LREM', KEYS[4], 1, ARGV[1])
  redis.call('LPUSH', KEYS[4], ARGV[2])
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt')) or 1
local r = transition(KEYS[1], KEYS[2], KEYS[3], '', 'RUNNING', attempt, 0, ARGV[4], ARGV[5],
                     {agentId = ARGV[4]}, {'result', 'error', 'exitCode'}, '')
if r[1] == 0 and ARGV[7] == '1' then
  -- Not claimable (cancelled, already finished, owned by someone else): drop our copy.
  redis.call('LREM', KEYS[4], 1, ARGV[2])
end
-- The claimed task comes back with the answer: the agent needs it, and a separate HGETALL
-- would be one more round trip per task.
if r[1] == 1 then r[5] = redis.call('HGETALL', KEYS[1]) end
return r
