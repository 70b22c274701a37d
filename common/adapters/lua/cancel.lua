-- Cancel a task from whatever state it is in, in one step: read and write with nothing in
-- between, so the answer is the truth. (Read, then transition in a second round trip, lost to
-- any transition in between: "cannot cancel: it is PENDING" for a task that was cancellable.)
-- The cancel is written at the task's current attempt and epoch: a client is no leader and
-- no agent, it supersedes whoever holds the task now. A message still on a queue or an inbox
-- stays there and is skipped: claim.lua, take_next, schedule.lua and accept_dispatch.lua all
-- refuse a CANCELLED task and drop their copy; a running agent sees the status and kills it.
-- The cancel is a final state no agent reports (a task cancelled before it ran has no agent at
-- all): it goes to the archive's outbox in the same step (archive_outbox.lua). A running task's
-- agent reports CANCELLED too, for the same (task, attempt): the archive's insert absorbs it.
-- KEYS: 1 task, 2 history, 3 stats, 4 archive:outbox
-- ARGV: 1 actor, 2 now
-- Returns {accepted, reason, status, attempt, cancelled from}:
--   {1, 'ok', 'CANCELLED', attempt, the state it was in}
--   {1, 'already_cancelled', 'CANCELLED', attempt, 'CANCELLED'}   (idempotent)
--   {0, 'already_final', 'SUCCESS' | 'FAILED', attempt, ''}
--   {0, 'missing', '', 0, ''}
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'epoch')
local status, attempt = cur[1], tonumber(cur[2]) or 1
if not status then
  count(KEYS[3], 'rejected_missing')
  return {0, 'missing', '', 0, ''}
end
if status == 'CANCELLED' then return {1, 'already_cancelled', status, attempt, status} end
if not (LEGAL[status] and LEGAL[status]['CANCELLED']) then
  return {0, 'already_final', status, attempt, ''}
end
local r = transition(KEYS[1], KEYS[2], KEYS[3], '', 'CANCELLED', attempt, tonumber(cur[3]) or 0,
                     ARGV[1], ARGV[2], {finishedAt = ARGV[2]}, {}, 'cancel requested')
if r[1] == 1 then archive_outbox(KEYS[4], KEYS[1], ARGV[1], 'cancel', 'cancel requested') end
r[5] = status
return r
