-- The one claim, shared by claim.lua (after BLMOVE, or after the chained report's LMOVE) and
-- finish_take.lua (the tail it peeked, claimed in the same script as the report), so one code
-- path decides every claim.
-- Stage 1 claim, right after the raw message reached this agent's processing list.
-- A hand-pushed message has no task hash yet: create it here. The raw message in the
-- processing list is replaced by the normalised one (with its taskId), so if this agent dies
-- now the reaper re-queues the *same* task instead of minting a second one.
-- Stage 2 claim: the message was dispatched to this agent's own list by the leader and carries
-- the attempt and epoch it was dispatched with. It is claimable (DISPATCHED -> RUNNING) only
-- if that attempt is still the task's current one and the task is still placed on this agent:
-- a message left over from before a failover, or a restarted agent's stale inbox, is refused.
-- k: {task, history, stats, processing, index, request, fingerprint}, every one from KEYS.
-- a: {raw, message (normalised), fields (JSON, for creation; '' = only claim a task that
--     exists), agent, now, task_id, track ('1' = keep the message on the processing list),
--     attempt (dispatched; '' for a stage 1 message), epoch (dispatched), has_request ('1'/'0'),
--     fingerprint}
-- Returns {accepted, reason, status, attempt[, task fields as HGETALL gives them if accepted]}.
local function claim_task(k, a)
  -- --8<-- [start:dispatched]
  if a.attempt ~= nil and a.attempt ~= '' then
    local cur = redis.call('HMGET', k.task, 'attempt', 'agentId', 'status')
    local attempt = tonumber(a.attempt)
    -- A wrong attempt is reported as stale by transition() below; check the owner only when
    -- the attempt matches, so each rejection is counted once under its real cause.
    if cur[1] and tonumber(cur[1]) == attempt and cur[2] ~= a.agent then
      count(k.stats, 'rejected_wrong_agent')
      if a.track == '1' then redis.call('LREM', k.processing, 1, a.message) end
      return {0, 'wrong_agent', cur[3], attempt}
    end
    local r = transition(k.task, k.history, k.stats, '', 'RUNNING', attempt,
                         tonumber(a.epoch) or 0, a.agent, a.now, {},
                         {'result', 'error', 'exitCode'}, '')
    if r[1] == 0 and a.track == '1' then redis.call('LREM', k.processing, 1, a.message) end
    if r[1] == 1 then r[5] = redis.call('HGETALL', k.task) end
    return r
  end
  -- --8<-- [end:dispatched]
  if redis.call('EXISTS', k.task) == 0 then
    -- The fast path (no fields given) claims only a task that exists; the caller then parses
    -- the message in full and calls again.
    if a.fields == '' then return {0, 'not_created', '', 0} end
    local verdict, existing = claim_request(k.request, a.has_request, a.task_id,
                                            k.fingerprint, a.fingerprint)
    if verdict == 'duplicate' then
      -- Same requestId as a task that exists: this message is that task, already submitted.
      count(k.stats, 'duplicate_request')
      if a.track == '1' then redis.call('LREM', k.processing, 1, a.raw) end
      return {0, 'duplicate_request', '', 0}
    elseif verdict == 'conflict' then
      -- The requestId names a task made from another request: a mistake the caller
      -- dead-letters with the reason (the message stays on the processing list until then).
      count(k.stats, 'idempotency_conflict')
      return {0, 'idempotency_conflict', '', 0, existing}
    end
    create_task(k.task, k.history, k.index, a.task_id, a.fields, a.now, 'queue:' .. a.agent,
                'created from queue message')
  end
  if a.track == '1' and a.raw ~= a.message then
    redis.call('LREM', k.processing, 1, a.raw)
    redis.call('LPUSH', k.processing, a.message)
  end
  local attempt = tonumber(redis.call('HGET', k.task, 'attempt')) or 1
  local r = transition(k.task, k.history, k.stats, '', 'RUNNING', attempt, 0, a.agent, a.now,
                       {agentId = a.agent}, {'result', 'error', 'exitCode'}, '')
  if r[1] == 0 and a.track == '1' then
    -- Not claimable (cancelled, already finished, owned by someone else): drop our copy.
    redis.call('LREM', k.processing, 1, a.message)
  end
  -- The claimed task comes back with the answer: the agent needs it, and a separate HGETALL
  -- would be one more round trip per task.
  if r[1] == 1 then r[5] = redis.call('HGETALL', k.task) end
  return r
end
