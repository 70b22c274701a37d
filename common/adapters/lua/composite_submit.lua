-- Store a composite: its parent (COMPOSITE, PENDING, never queued) and every initial child
-- (WAITING, on no queue), the parent's children list and its place in composites:active, or
-- return the parent an earlier submit with the same requestId created. One script, so a crash
-- never leaves a parent with half its children, and two submits racing with one requestId
-- cannot both create a composite (claim_request, as submit.lua).
-- KEYS: 1 parent task, 2 parent history, 3 index, 4 request key (or a dummy),
--       5 request fingerprint hash (or a dummy), 6 children list, 7 composites:active,
--       then two per child: task, history
-- ARGV: 1 parentId, 2 parent hash fields JSON, 3 now, 4 actor, 5 has request id (0/1),
--       6 fingerprint of the document, then two per child: childId, hash fields JSON
-- Returns {parentId, 1} created; {existing parentId, 0} the same request again;
-- {existing taskId, 0, 'conflict'} the key names a task created from a different request.
local n = groups(#ARGV, 6, 2)
if #KEYS ~= 7 + 2 * n then error('tasklab: ' .. #KEYS .. ' keys for ' .. n .. ' children') end
local verdict, existing = claim_request(KEYS[4], ARGV[5], ARGV[1], KEYS[5], ARGV[6])
if verdict == 'conflict' then return {existing, 0, 'conflict'} end
if verdict == 'duplicate' then return {existing, 0} end
create_task(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], '')
local ids = {}
for i = 0, n - 1 do
  local id = ARGV[7 + 2 * i]
  create_task(KEYS[8 + 2 * i], KEYS[9 + 2 * i], KEYS[3], id, ARGV[8 + 2 * i], ARGV[3], ARGV[4],
              'created with its parent')
  ids[#ids + 1] = id
end
push_all(KEYS[6], ids)
redis.call('SADD', KEYS[7], ARGV[1])
return {ARGV[1], 1}
