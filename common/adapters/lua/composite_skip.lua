-- WAITING -> SKIPPED for each listed child still WAITING: a child that will never run (its
-- trigger rule cannot hold, its parent failed or was cancelled). Fenced; allowed after the
-- parent ended, since that is when most children are skipped.
-- Each child skipped goes to the archive's outbox in the same step (archive_outbox.lua): no
-- agent ever reports a child that never ran.
-- KEYS: 1 parent task, 2 stats, 3 fence, 4 archive:outbox, then two per child: task, history
-- ARGV: 1 parentId, 2 epoch, 3 actor, 4 now, 5 reason, then one per child: childId
-- Returns {accepted, reason, how many were skipped}.
local n = groups(#ARGV, 5, 1)
if #KEYS ~= 4 + 2 * n then error('tasklab: ' .. #KEYS .. ' keys for ' .. n .. ' children') end
local epoch = tonumber(ARGV[2])
if stale_epoch(KEYS[3], KEYS[2], epoch) then return {0, 'stale_epoch', 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 'missing', 0} end
local skipped = 0
for i = 0, n - 1 do
  local tkey, hkey = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local cur = redis.call('HMGET', tkey, 'status', 'attempt', 'parentId')
  if cur[1] == 'WAITING' and cur[3] == ARGV[1] then
    local r = transition(tkey, hkey, KEYS[2], KEYS[3], 'SKIPPED', tonumber(cur[2]) or 1, epoch,
                         ARGV[3], ARGV[4], {error = ARGV[5], finishedAt = ARGV[4]}, {}, ARGV[5])
    if r[1] == 1 then
      skipped = skipped + 1
      archive_outbox(KEYS[4], tkey, ARGV[3], 'composite', ARGV[5])
    end
  end
end
return {1, 'ok', skipped}
