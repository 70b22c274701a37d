-- Give back the work of an agent that stopped heartbeating (stage 1), whose ZooKeeper node
-- vanished (stage 2), or of this agent's previous incarnation at start-up. Each task it held
-- goes back to PENDING with attempt + 1, so a late report from the dead owner is stale and
-- rejected. The list is its processing list or (stage 2) its agent:{id}:tasks inbox.
-- KEYS: 1 processing list or inbox, 2 heartbeat key, 3 pending queue, 4 stats
-- ARGV: 1 agentId, 2 now, 3 force (1 = reap even if the heartbeat is alive), 4 actor
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return {0, 0} end
local requeued, dropped = 0, 0
while true do
  -- Oldest first (the list is LPUSHed), re-queued at the consuming end: they run next.
  local msg = redis.call('RPOP', KEYS[1])
  if not msg then break end
  local ok, data = pcall(cjson.decode, msg)
  local task_id = ok and type(data) == 'table' and data.taskId or nil
  if not task_id then
    -- A raw message whose claim never ran: nothing was created for it, just put it back.
    redis.call('RPUSH', KEYS[3], msg)
    requeued = requeued + 1
  else
    local tkey = 'task:' .. task_id
    local cur = redis.call('HMGET', tkey, 'status', 'attempt', 'agentId', 'epoch')
    local status = cur[1]
    if status == 'PENDING' then
      redis.call('RPUSH', KEYS[3], msg)
      requeued = requeued + 1
    elseif (status == 'RUNNING' or status == 'DISPATCHED') and cur[3] == ARGV[1] then
      -- The task's own epoch: a stage 2 task carries its dispatching leader's epoch, and the
      -- reaper is not a leader; it must neither be rejected as older nor raise the epoch.
      local r = transition(tkey, tkey .. ':history', KEYS[4], '', 'PENDING',
                           tonumber(cur[2]) or 1, tonumber(cur[4]) or 0, ARGV[4], ARGV[2], {},
                           {'agentId'}, 'agent ' .. ARGV[1] .. ' lost')
      if r[1] == 1 then
        redis.call('RPUSH', KEYS[3], msg)
        requeued = requeued + 1
      else
        dropped = dropped + 1
      end
    else
      dropped = dropped + 1
    end
  end
end
return {requeued, dropped}
