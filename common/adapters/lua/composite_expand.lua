-- Add the children a composite gets late (a map step's items, a broadcast's agents), WAITING,
-- once: the parent's `expanded` field says it was done, and a second call is refused. The new
-- children go before the reduce step, which stays last in the list. Fenced.
-- KEYS: 1 parent task, 2 stats, 3 fence, 4 children list, 5 index, then two per child: task,
--       history
-- ARGV: 1 parentId, 2 epoch, 3 actor, 4 now, 5 the reduce child's id ('' = none), then two
--       per child: childId, hash fields JSON
-- Returns {accepted, reason, how many children were added}.
local n = groups(#ARGV, 5, 2)
if #KEYS ~= 5 + 2 * n then error('tasklab: ' .. #KEYS .. ' keys for ' .. n .. ' children') end
local epoch = tonumber(ARGV[2])
if stale_epoch(KEYS[3], KEYS[2], epoch) then return {0, 'stale_epoch', 0} end
local parent = redis.call('HMGET', KEYS[1], 'status', 'expanded', 'taskType')
if not parent[1] or parent[3] ~= 'COMPOSITE' then return {0, 'missing', 0} end
if is_final(parent[1]) then return {0, 'parent_final', 0} end
if parent[2] == '1' then return {0, 'already_expanded', 0} end
local ids = {}
for i = 0, n - 1 do
  local id = ARGV[6 + 2 * i]
  if redis.call('EXISTS', KEYS[6 + 2 * i]) == 0 then
    create_task(KEYS[6 + 2 * i], KEYS[7 + 2 * i], KEYS[5], id, ARGV[7 + 2 * i], ARGV[4], ARGV[3],
                'created by its parent')
  end
  ids[#ids + 1] = id
end
local reduce = ARGV[5]
if reduce ~= '' and redis.call('LINDEX', KEYS[4], -1) == reduce then
  redis.call('RPOP', KEYS[4])
  ids[#ids + 1] = reduce
end
push_all(KEYS[4], ids)
redis.call('HSET', KEYS[1], 'expanded', '1', 'updatedAt', ARGV[4])
return {1, 'ok', n}
