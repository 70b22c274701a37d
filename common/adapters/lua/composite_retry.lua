-- Retry a FAILED or CANCELLED composite: a new parent (retryOf the old one) whose children are
-- the old succeeded ones, listed again as they are, and a new WAITING task for every other
-- (retryOf the old child). A kept child's `keptBy` names the new parent: its parentId still
-- names the old one (its place in the old tree), and retention must keep it while the parent
-- that lists it now runs (a kept child is kept again by the retry of the retry: the newest
-- parent is the only one that can still be running). One script, checked against the old parent and the kept children
-- as they are now: a parent that is not retryable any more gets nothing created.
-- With a requestId the retry is idempotent: the same id again answers the parent the first call
-- made; an id that names anything else is a conflict. Checked before anything else, so a replay
-- is answered even once the kept children or the old parent have changed.
-- KEYS: 1 old parent, 2 new parent, 3 new parent history, 4 index, 5 new children list,
--       6 composites:active, 7 request key (or a dummy), 8 request fingerprint (or a dummy),
--       then two per new child (task, history), then one per kept child
-- ARGV: 1 new parentId, 2 new parent hash fields JSON, 3 now, 4 actor, 5 the new children
--       list (JSON array of ids, in order), 6 how many new children, 7 has request id (0/1),
--       8 fingerprint of this retry, then two per new child: childId, hash fields JSON
-- Returns {1, 'ok', new parentId}, {2, 'duplicate', the first new parentId},
-- {0, 'conflict', the task the id names} or {0, reason, status}.
local fresh = tonumber(ARGV[6])
if #ARGV ~= 8 + 2 * fresh then error('tasklab: ' .. #ARGV .. ' arguments for ' .. fresh) end
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[7]) == 1 then
  local verdict, existing = claim_request(KEYS[7], ARGV[7], ARGV[1], KEYS[8], ARGV[8])
  if verdict == 'conflict' then return {0, 'conflict', existing} end
  return {2, 'duplicate', existing}
end
local old = redis.call('HMGET', KEYS[1], 'status', 'taskType')
if not old[1] or old[2] ~= 'COMPOSITE' then return {0, 'missing', old[1] or ''} end
if old[1] ~= 'FAILED' and old[1] ~= 'CANCELLED' then return {0, 'not_retryable', old[1]} end
for k = 9 + 2 * fresh, #KEYS do
  local s = redis.call('HGET', KEYS[k], 'status')
  if s ~= 'SUCCESS' then return {0, 'kept_child_changed', s or ''} end
end
claim_request(KEYS[7], ARGV[7], ARGV[1], KEYS[8], ARGV[8])
create_task(KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
            'retry of ' .. string.sub(KEYS[1], 6))
create_children(KEYS[4], 9, 9, fresh, ARGV[3], ARGV[4], 'created with its parent', false)
for k = 9 + 2 * fresh, #KEYS do redis.call('HSET', KEYS[k], 'keptBy', ARGV[1]) end
push_all(KEYS[5], cjson.decode(ARGV[5]))
redis.call('SADD', KEYS[6], ARGV[1])
return {1, 'ok', ARGV[1]}
