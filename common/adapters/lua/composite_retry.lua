-- Retry a FAILED or CANCELLED composite: a new parent (retryOf the old one) whose children are
-- the old succeeded ones, listed again as they are, and a new WAITING task for every other
-- (retryOf the old child). One script, checked against the old parent and the kept children
-- as they are now: a parent that is not retryable any more gets nothing created.
-- KEYS: 1 old parent, 2 new parent, 3 new parent history, 4 index, 5 new children list,
--       6 composites:active, then two per new child (task, history), then one per kept child
-- ARGV: 1 new parentId, 2 new parent hash fields JSON, 3 now, 4 actor, 5 the new children
--       list (JSON array of ids, in order), 6 how many new children, then two per new child:
--       childId, hash fields JSON
-- Returns {1, 'ok', new parentId} or {0, reason, status}.
local fresh = tonumber(ARGV[6])
if #ARGV ~= 6 + 2 * fresh then error('tasklab: ' .. #ARGV .. ' arguments for ' .. fresh) end
local old = redis.call('HMGET', KEYS[1], 'status', 'taskType')
if not old[1] or old[2] ~= 'COMPOSITE' then return {0, 'missing', old[1] or ''} end
if old[1] ~= 'FAILED' and old[1] ~= 'CANCELLED' then return {0, 'not_retryable', old[1]} end
for k = 7 + 2 * fresh, #KEYS do
  local s = redis.call('HGET', KEYS[k], 'status')
  if s ~= 'SUCCESS' then return {0, 'kept_child_changed', s or ''} end
end
create_task(KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
            'retry of ' .. string.sub(KEYS[1], 6))
for i = 0, fresh - 1 do
  create_task(KEYS[7 + 2 * i], KEYS[8 + 2 * i], KEYS[4], ARGV[7 + 2 * i], ARGV[8 + 2 * i],
              ARGV[3], ARGV[4], 'created with its parent')
end
push_all(KEYS[5], cjson.decode(ARGV[5]))
redis.call('SADD', KEYS[6], ARGV[1])
return {1, 'ok', ARGV[1]}
