-- Cancel a composite: its parent and every child not finished, in one step (cancel.lua's rules
-- for each: written at the task's current attempt and epoch, a client supersedes whoever holds
-- it). Running children are killed by their agents, which see CANCELLED; a child's message
-- still on a queue is skipped there. The parent leaves composites:active: nothing of it is
-- left for the coordinator to do. The parent and each child cancelled go to the archive's
-- outbox in the same step (archive_outbox.lua).
-- KEYS: 1 parent task, 2 parent history, 3 stats, 4 composites:active, 5 children list,
--       6 archive:outbox, then two per child, in the list's order: task, history
-- ARGV: 1 parentId, 2 actor, 3 now
-- Returns {accepted, reason, status, attempt, cancelled from, children cancelled}; reason
-- 'moved' (nothing written): the children list is not the one the caller read (an expand ran
-- in between), read it again.
local n = groups(#KEYS, 6, 2)
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'epoch', 'taskType')
local status, attempt = cur[1], tonumber(cur[2]) or 1
if not status or cur[4] ~= 'COMPOSITE' then
  count(KEYS[3], 'rejected_missing')
  return {0, 'missing', status or '', 0, '', 0}
end
-- Exactly the listed children, and their own keys: a child outside the list is never touched.
local listed = redis.call('LRANGE', KEYS[5], 0, -1)
if #listed ~= n then return {0, 'moved', status, attempt, '', 0} end
for i = 1, n do
  if KEYS[5 + 2 * i] ~= 'task:' .. listed[i] then return {0, 'moved', status, attempt, '', 0} end
end
local reason, from = 'ok', status
if status == 'CANCELLED' then
  -- Idempotent; the children were cancelled with it (they are swept again below, harmlessly).
  reason = 'already_cancelled'
elseif not (LEGAL[status] and LEGAL[status]['CANCELLED']) then
  return {0, 'already_final', status, attempt, '', 0}
else
  local r = transition(KEYS[1], KEYS[2], KEYS[3], '', 'CANCELLED', attempt,
                       tonumber(cur[3]) or 0, ARGV[2], ARGV[3], {finishedAt = ARGV[3]}, {},
                       'cancel requested')
  if r[1] ~= 1 then return {0, r[2], r[3], r[4], '', 0} end
  attempt = r[4]
  archive_outbox(KEYS[6], KEYS[1], ARGV[2], 'composite', 'cancel requested')
end
local cancelled = 0
for i = 1, n do
  local tkey, hkey = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local c = redis.call('HMGET', tkey, 'status', 'attempt', 'epoch')
  if c[1] and not is_final(c[1]) then
    local r = transition(tkey, hkey, KEYS[3], '', 'CANCELLED', tonumber(c[2]) or 1,
                         tonumber(c[3]) or 0, ARGV[2], ARGV[3], {finishedAt = ARGV[3]}, {},
                         'its parent was cancelled')
    if r[1] == 1 then
      cancelled = cancelled + 1
      archive_outbox(KEYS[6], tkey, ARGV[2], 'composite', 'its parent was cancelled')
    end
  end
end
redis.call('SREM', KEYS[4], ARGV[1])
return {1, reason, 'CANCELLED', attempt, from, cancelled}
