-- The archive's outbox (stage 5; common/archive/outbox.py reads it): a final state that no
-- agent reports on the bus (a cancel, a failover that gives up, a composite's parent and its
-- skipped or cancelled children) is appended to archive:outbox by the script that makes the
-- transition, in the same atomic step, so the state and its entry exist together or not at all.
-- Built into cancel.lua, reap.lua, transition.lua and the composite_*.lua that end tasks.
--
-- Only while the stream exists: the archiver creates it (XGROUP CREATE ... MKSTREAM) when it
-- starts. A platform with no archiver writes nothing, and nothing grows.
--
-- outbox: the archive:outbox key (declared in KEYS by every caller); tkey: the task's key,
-- read just after its transition; actor: who ended it; source: which path (bounded: cancel,
-- failover, dispatch, composite); err, result: this transition's own (nil = none), never
-- the hash's, which may still hold an earlier attempt's.
local ARCHIVE_FIELDS = {'status', 'attempt', 'epoch', 'agentId', 'finishedAt', 'updatedAt',
                        'taskType', 'taskName', 'parentId', 'createdAt'}

local function archive_outbox(outbox, tkey, actor, source, err, result)
  if redis.call('EXISTS', outbox) == 0 then return end
  local v = redis.call('HMGET', tkey, unpack(ARCHIVE_FIELDS))
  local args = {'taskId', string.sub(tkey, 6), 'actor', actor, 'source', source}
  for i, name in ipairs(ARCHIVE_FIELDS) do
    if v[i] then
      args[#args + 1] = name
      args[#args + 1] = v[i]
    end
  end
  if err and err ~= '' then
    args[#args + 1] = 'error'
    args[#args + 1] = err
  end
  if result and result ~= '' then
    args[#args + 1] = 'result'
    args[#args + 1] = result
  end
  redis.call('XADD', outbox, '*', unpack(args))
end
