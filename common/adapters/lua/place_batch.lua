-- The leader's placement of a batch, in one fenced script: for each message it took onto
-- queue:scheduling, PENDING -> SCHEDULED exactly as schedule.lua does (creating a hand-pushed
-- task, replacing the raw message by the normalised one), then, if the leader chose an agent
-- for it, SCHEDULED -> DISPATCHED with its dispatch entry onto that agent's inbox and the
-- message off queue:scheduling, as the one-task dispatch does. The agents were chosen in
-- Python before this call, from the messages' specs and the inbox lengths the leader read.
-- A deposed leader (epoch below the fence) changes nothing at all, for the whole batch: every
-- message stays on queue:scheduling, where the current leader's recovery sweep finds it.
-- KEYS: 1 stats, 2 fence, 3 queue:scheduling, 4 task index, 5 agents:seen,
--       then five per message: task, history, request key (or a dummy),
--       request fingerprint hash (or a dummy), the chosen agent's inbox (or a dummy)
-- ARGV: 1 epoch, 2 actor, 3 now, then seven per message: raw message, normalised message,
--       hash fields JSON, taskId, has a requestId (1/0), the request's fingerprint,
--       the chosen agentId ('' = schedule only: the caller places it itself)
-- Returns one reply per message, the transition shape {code, reason, status, attempt}:
-- dispatched {1, 'ok', 'DISPATCHED', attempt}; scheduled only {1, 'ok', 'SCHEDULED', attempt}
-- (no agent chosen, or the task is pinned to one agent in its hash);
-- refused as schedule.lua refuses (an idempotency conflict with the existing taskId as a
-- fifth element). A stale epoch: one reply, {0, 'stale_epoch', '', 0}, and nothing written.
local epoch = tonumber(ARGV[1])
local actor, now = ARGV[2], ARGV[3]
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch < fence then
  count(KEYS[1], 'rejected_stale_epoch')
  return {{0, 'stale_epoch', '', 0}}
end
local n = (#KEYS - 5) / 5
if n ~= math.floor(n) or #ARGV ~= 3 + 7 * n then
  error('tasklab: place_batch got ' .. #KEYS .. ' keys and ' .. #ARGV .. ' arguments')
end
local replies = {}
for i = 1, n do
  local k, a = 5 + 5 * (i - 1), 3 + 7 * (i - 1)
  local tkey, hkey, inbox = KEYS[k + 1], KEYS[k + 2], KEYS[k + 5]
  local raw, message, task_id, agent = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4], ARGV[a + 7]
  local reply = nil
  if redis.call('EXISTS', tkey) == 0 then
    local verdict, existing = claim_request(KEYS[k + 3], ARGV[a + 5], task_id, KEYS[k + 4],
                                            ARGV[a + 6])
    if verdict == 'duplicate' then
      count(KEYS[1], 'duplicate_request')
      redis.call('LREM', KEYS[3], 1, raw)
      reply = {0, 'duplicate_request', '', 0}
    elseif verdict == 'conflict' then
      -- Dead-lettered by the caller, with the reason; the message stays on queue:scheduling.
      count(KEYS[1], 'idempotency_conflict')
      reply = {0, 'idempotency_conflict', '', 0, existing}
    else
      create_task(tkey, hkey, KEYS[4], task_id, ARGV[a + 3], now, actor,
                  'created from queue message')
    end
  end
  if not reply then
    if raw ~= message then
      redis.call('LREM', KEYS[3], 1, raw)
      redis.call('LPUSH', KEYS[3], message)
    end
    local attempt = tonumber(redis.call('HGET', tkey, 'attempt')) or 1
    reply = transition(tkey, hkey, KEYS[1], KEYS[2], 'SCHEDULED', attempt, epoch, actor, now,
                       {}, {'agentId'}, '')
    if reply[1] == 0 then
      -- Not schedulable (cancelled, finished, a duplicate copy of a placed task): drop it.
      redis.call('LREM', KEYS[3], 1, message)
    elseif agent ~= '' and not redis.call('HGET', tkey, 'pinnedAgent') then
      -- (A pinned task, a broadcast's child, is pinned in its hash, not in its message: the
      -- caller could not see it, so it is left SCHEDULED for the caller's one-task path.)
      attempt = reply[4]
      redis.call('SADD', KEYS[5], agent)
      reply = transition(tkey, hkey, KEYS[1], KEYS[2], 'DISPATCHED', attempt, epoch, actor, now,
                         {agentId = agent}, {}, '')
      if reply[1] == 1 then
        -- The dispatch entry is the message with the attempt and epoch appended, byte for
        -- byte what DispatchEntry.to_json() makes of the same message (the epoch as the
        -- caller wrote it: a czxid can have more digits than Lua prints a number with).
        local entry = string.sub(message, 1, -2) .. ',"attempt":' .. attempt .. ',"epoch":'
                      .. ARGV[1] .. '}'
        redis.call('LREM', KEYS[3], 1, message)
        redis.call('LPUSH', inbox, entry)
      end
    end
  end
  replies[i] = reply
end
return replies
