-- Released, unfinished children -> CANCELLED: those a FAIL_FAST parent stops, or those still
-- running under a parent a client cancelled. Their agents see CANCELLED and kill them; a copy
-- still on a queue is dropped by whoever takes it. WAITING children are the skip script's.
-- Fenced as a whole, before anything moves. Each cancel goes to the archive's outbox in the same
-- step (archive_outbox.lua): a child cancelled before it ran has no agent to report it.
-- KEYS: 1 parent task, 2 stats, 3 fence, 4 archive:outbox, then two per child: task, history
-- ARGV: 1 parentId, 2 epoch, 3 actor, 4 now, 5 reason, then one per child: childId
-- Returns {accepted, reason, how many were cancelled}.
local n = groups(#ARGV, 5, 1)
if #KEYS ~= 4 + 2 * n then error('tasklab: ' .. #KEYS .. ' keys for ' .. n .. ' children') end
local epoch = tonumber(ARGV[2])
if stale_epoch(KEYS[3], KEYS[2], epoch) then return {0, 'stale_epoch', 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'missing', 0} end
local cancelled = 0
for i = 0, n - 1 do
  local tkey, hkey = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local cur = redis.call('HMGET', tkey, 'status', 'attempt', 'parentId', 'epoch')
  local status = cur[1]
  if status and status ~= 'WAITING' and cur[3] == ARGV[1] and LEGAL[status]
      and LEGAL[status]['CANCELLED'] then
    -- At the child's own epoch when it is newer: a cancel supersedes whoever holds the task.
    local at = math.max(epoch, tonumber(cur[4]) or 0)
    local r = transition(tkey, hkey, KEYS[2], KEYS[3], 'CANCELLED', tonumber(cur[2]) or 1, at,
                         ARGV[3], ARGV[4], {error = ARGV[5], finishedAt = ARGV[4]}, {}, ARGV[5])
    if r[1] == 1 then
      cancelled = cancelled + 1
      archive_outbox(KEYS[4], tkey, ARGV[3], 'composite', ARGV[5])
    end
  end
end
return {1, 'ok', cancelled}
