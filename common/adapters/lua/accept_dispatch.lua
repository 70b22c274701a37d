-- Stage 3: an agent read a dispatch addressed to it on task-dispatch-topic and wants to start
-- the task. Kafka delivers at least once (a redelivery after a crash, a dispatch published
-- again by the leader's relay), so the agent asks here first: the dispatch's entry on the
-- agent's inbox is removed by exactly one call, and only that call may start the process.
-- The task's state is not changed: RUNNING travels to the manager on task-status-update-topic.
-- The entry moves to the agent's processing list, where a failover (ZooKeeper or missed
-- heartbeats) finds it if the agent dies now.
-- An accepted entry leaves room in the inbox: a token on scheduler:room (at most one) wakes a
-- leader that waits because every inbox was full (Scheduler: await_room).
-- KEYS: 1 task, 2 inbox agent:{id}:tasks, 3 processing:{id}, 4 stats, 5 scheduler:room
-- ARGV: 1 taskId, 2 attempt, 3 agentId
-- Returns {1, 'ok', status, attempt, entry} or {0, reason, status, attempt}.
local attempt = tonumber(ARGV[2])
local entry = nil
for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local ok, d = pcall(cjson.decode, e)
  if ok and type(d) == 'table' and d.taskId == ARGV[1] and tonumber(d.attempt) == attempt then
    entry = e
    break
  end
end
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'agentId')
local status, cur_attempt = cur[1] or '', tonumber(cur[2]) or 0
if not cur[1] then
  if entry then redis.call('LREM', KEYS[2], 1, entry) end
  count(KEYS[4], 'rejected_dispatch_missing')
  return {0, 'missing', '', 0}
end
if not entry then
  -- Already taken by an earlier delivery of this very dispatch, or given back by a failover.
  count(KEYS[4], 'rejected_dispatch_taken')
  return {0, 'taken', status, cur_attempt}
end
if status ~= 'DISPATCHED' or cur_attempt ~= attempt or cur[3] ~= ARGV[3] then
  -- Cancelled before it started, or a leftover of an older placement: drop it, so the inbox
  -- (which the scheduler reads as this agent's backlog) drains.
  redis.call('LREM', KEYS[2], 1, entry)
  count(KEYS[4], 'rejected_dispatch_stale')
  return {0, 'stale', status, cur_attempt}
end
redis.call('LREM', KEYS[2], 1, entry)
redis.call('LPUSH', KEYS[3], entry)
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 0)
return {1, 'ok', status, attempt, entry}
