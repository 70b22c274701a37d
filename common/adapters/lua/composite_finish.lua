-- A composite's parent ends: RUNNING (or PENDING, through RUNNING) -> SUCCESS or FAILED, with
-- its result or error, and off composites:active, fenced. A parent already final (a client
-- cancelled it) is only taken off the set. The parent's end goes to the archive's outbox in the
-- same step (archive_outbox.lua): the coordinator, not an agent, decides it.
-- KEYS: 1 parent task, 2 parent history, 3 stats, 4 fence, 5 composites:active, 6 archive:outbox
-- ARGV: 1 parentId, 2 SUCCESS | FAILED, 3 epoch, 4 actor, 5 now, 6 fields JSON (result, error)
-- Returns {accepted, reason, 1 if the parent moved}.
local epoch = tonumber(ARGV[3])
if stale_epoch(KEYS[4], KEYS[3], epoch) then return {0, 'stale_epoch', 0} end
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if not cur[1] then
  redis.call('SREM', KEYS[5], ARGV[1])
  return {0, 'missing', 0}
end
if is_final(cur[1]) then
  redis.call('SREM', KEYS[5], ARGV[1])
  return {0, 'parent_final', 0}
end
local attempt = tonumber(cur[2]) or 1
if cur[1] == 'PENDING' then
  local r = transition(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 'RUNNING', attempt, epoch, ARGV[4],
                       ARGV[5], {}, {}, '')
  if r[1] ~= 1 then return {0, r[2], 0} end
end
local fields = cjson.decode(ARGV[6])
fields.finishedAt = ARGV[5]
local r = transition(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], attempt, epoch, ARGV[4],
                     ARGV[5], fields, {}, fields.error or '')
if r[1] ~= 1 then return {0, r[2], 0} end
archive_outbox(KEYS[6], KEYS[1], ARGV[4], 'composite', fields.error, fields.result)
redis.call('SREM', KEYS[5], ARGV[1])
return {1, 'ok', 1}
