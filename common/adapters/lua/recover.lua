-- The leader's recovery sweep of queue:scheduling, run when it is elected and whenever it has
-- no message of its own in flight: everything on the list then belongs to a leader that died
-- or was deposed between taking a message and dispatching it. Nothing is lost and nothing is
-- placed twice: a SCHEDULED task goes back to PENDING with attempt + 1 (so the old leader's
-- dispatch, should it still come, is stale twice over), a PENDING or hash-less one is simply
-- queued again, and a copy whose task has moved on is dropped.
-- KEYS: 1 scheduling list, 2 pending queue, 3 stats, 4 fence
-- ARGV: 1 epoch, 2 now, 3 actor
local epoch = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if epoch < fence then
  count(KEYS[3], 'rejected_stale_epoch')
  return {-1, 0}
end
local requeued, dropped = 0, 0
while true do
  local msg = redis.call('RPOP', KEYS[1])
  if not msg then break end
  local ok, data = pcall(cjson.decode, msg)
  local task_id = ok and type(data) == 'table' and data.taskId or nil
  local status, cur = nil, nil
  if task_id then
    cur = redis.call('HMGET', 'task:' .. task_id, 'status', 'attempt')
    status = cur[1]
  end
  if not status or status == 'PENDING' then
    -- Never normalised (raw hand-pushed message), or not placed yet: just queue it again.
    redis.call('RPUSH', KEYS[2], msg)
    requeued = requeued + 1
  elseif status == 'SCHEDULED' then
    local tkey = 'task:' .. task_id
    local r = transition(tkey, tkey .. ':history', KEYS[3], KEYS[4], 'PENDING',
                         tonumber(cur[2]) or 1, epoch, ARGV[3], ARGV[2], {}, {'agentId'},
                         'scheduler lost it in flight')
    if r[1] == 1 then
      redis.call('RPUSH', KEYS[2], msg)
      requeued = requeued + 1
    else
      dropped = dropped + 1
    end
  else
    dropped = dropped + 1
  end
end
return {requeued, dropped}
