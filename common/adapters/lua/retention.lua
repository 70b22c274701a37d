-- Delete one finished task and everything that hangs off it, if it is *still* finished and old.
-- The caller picked the task from a read a moment ago; in between it may have been retried,
-- requeued or touched, so both facts are checked again here, atomically with the deletes.
-- "Finished" is read off LEGAL (generated from the Python table): a state with no way out.
-- A composite's child is kept while the parent that lists it is not final: its `keptBy` (the
-- newest retry that kept it) or else its parentId. A parent goes with its children list.
-- KEYS: 1 task, 2 history, 3 logs, 4 log cursor, 5 index, 6 request key (or a dummy),
--       7 request fingerprint hash (or a dummy), 8 children list, 9 holding parent task (or a dummy)
-- ARGV: 1 taskId, 2 cutoff (updatedAt must be older), 3 requestId the caller read ('' = none),
--       4 holding parent the caller read: keptBy, else parentId ('' = none)
-- Returns {removed 0/1, reason, status}.
local function is_terminal(status)
  return LEGAL[status] ~= nil and next(LEGAL[status]) == nil
end

local cutoff = tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[1], 'status', 'updatedAt', 'requestId', 'parentId', 'keptBy')
if not cur[1] then
  -- No hash: an index entry (and maybe history or logs) left behind by a hand-deleted task.
  -- Only an old entry is cleared; a hash is always written together with its index entry.
  local score = redis.call('ZSCORE', KEYS[5], ARGV[1])
  if score and tonumber(score) < cutoff then
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    redis.call('ZREM', KEYS[5], ARGV[1])
    return {1, 'orphan', ''}
  end
  return {0, 'missing', ''}
end
local status = cur[1]
if not is_terminal(status) then return {0, 'not_terminal', status} end
local updated = cur[2] and tonumber(cur[2])
if not updated or updated >= cutoff then return {0, 'recent', status} end
-- KEYS[6] was named after the requestId the caller read; a hash that says otherwise means
-- the key passed is not this task's, so nothing is deleted on its word.
if (cur[3] or '') ~= ARGV[3] then return {0, 'request_mismatch', status} end
-- The same for KEYS[9], named after the holding parent the caller read.
local holder = cur[5] or cur[4]
if (holder or '') ~= (ARGV[4] or '') then return {0, 'parent_mismatch', status} end
if holder then
  local parent = redis.call('HGET', KEYS[9], 'status')
  if parent and not is_terminal(parent) then return {0, 'parent_unfinished', status} end
end
-- The idempotency key goes with its task, and only if it still names this task: a newer task
-- may own the same requestId (the key was deleted by hand and a client submitted again).
-- Its fingerprint goes with it on the same condition, read off the fingerprint itself.
if ARGV[3] ~= '' then
  if redis.call('GET', KEYS[6]) == ARGV[1] then redis.call('DEL', KEYS[6]) end
  if redis.call('HGET', KEYS[7], 'taskId') == ARGV[1] then redis.call('DEL', KEYS[7]) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[8])
redis.call('ZREM', KEYS[5], ARGV[1])
return {1, 'removed', status}
