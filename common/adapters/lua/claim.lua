-- Stage 1 claim, right after BLMOVE put the raw message on this agent's processing list.
-- A hand-pushed message has no task hash yet: create it here. The raw message in the
-- processing list is replaced by the normalised one (with its taskId), so if this agent dies
-- now the reaper re-queues the *same* task instead of minting a second one.
-- KEYS: 1 task, 2 history, 3 stats, 4 processing list, 5 index
-- ARGV: 1 raw message, 2 normalised message, 3 hash fields JSON (for creation), 4 agentId,
--       5 now, 6 taskId, 7 track (1 = keep the message on the processing list)
if redis.call('EXISTS', KEYS[1]) == 0 then
  local fields = cjson.decode(ARGV[3])
  local args = {}
  for k, v in pairs(fields) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  redis.call('HSET', KEYS[1], unpack(args))
  redis.call('RPUSH', KEYS[2], cjson.encode({state = 'PENDING', at = ARGV[5],
                                             actor = 'queue:' .. ARGV[4], epoch = 0,
                                             attempt = 1, reason = 'created from queue message'}))
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
end
if ARGV[7] == '1' and ARGV[1] ~= ARGV[2] then
  redis.call('LREM', KEYS[4], 1, ARGV[1])
  redis.call('LPUSH', KEYS[4], ARGV[2])
end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt')) or 1
local r = transition(KEYS[1], KEYS[2], KEYS[3], '', 'RUNNING', attempt, 0, ARGV[4], ARGV[5],
                     {agentId = ARGV[4]}, {'result', 'error', 'exitCode'}, '')
if r[1] == 0 and ARGV[7] == '1' then
  -- Not claimable (cancelled, already finished, owned by someone else): drop our copy.
  redis.call('LREM', KEYS[4], 1, ARGV[2])
end
return r
