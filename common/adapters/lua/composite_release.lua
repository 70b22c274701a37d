-- Release WAITING children onto queue:pending (WAITING -> PENDING, its first attempt), fenced,
-- and only while the parent is RUNNING. From here a child is an ordinary task: the scheduler
-- places its message as any other. A child no longer WAITING (released already, cancelled,
-- skipped) or not this parent's is left alone, so a release repeated changes nothing twice.
-- KEYS: 1 parent task, 2 stats, 3 fence, 4 queue:pending, then two per child: task, history
-- ARGV: 1 parentId, 2 epoch, 3 actor, 4 now, then three per child: childId, hash fields to set
--       as it goes (JSON object; a reduce's input), its queue message (Task.to_message())
-- Returns {accepted, reason, how many were released}.
local n = groups(#ARGV, 4, 3)
if #KEYS ~= 4 + 2 * n then error('tasklab: ' .. #KEYS .. ' keys for ' .. n .. ' children') end
local epoch = tonumber(ARGV[2])
if stale_epoch(KEYS[3], KEYS[2], epoch) then return {0, 'stale_epoch', 0} end
local parent = redis.call('HGET', KEYS[1], 'status')
if not parent then return {0, 'missing', 0} end
if is_final(parent) then return {0, 'parent_final', 0} end
if parent ~= 'RUNNING' then return {0, 'parent_not_running', 0} end
local released = 0
for i = 0, n - 1 do
  local tkey, hkey = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local cur = redis.call('HMGET', tkey, 'status', 'attempt', 'parentId')
  if cur[1] == 'WAITING' and cur[3] == ARGV[1] then
    local r = transition(tkey, hkey, KEYS[2], KEYS[3], 'PENDING', tonumber(cur[2]) or 1, epoch,
                         ARGV[3], ARGV[4], cjson.decode(ARGV[6 + 3 * i]), {},
                         'released by its parent')
    if r[1] == 1 then
      redis.call('LPUSH', KEYS[4], ARGV[7 + 3 * i])
      released = released + 1
    end
  end
end
return {1, 'ok', released}
