-- Shared by the composite scripts (composite_*.lua, built with this file after the prelude).

-- The coordinator's writes are fenced as a whole, before anything moves: a deposed leader's
-- coordinator (its epoch below fence:scheduler) changes nothing at all, not even one child.
local function stale_epoch(fence_key, stats_key, epoch)
  local fence = tonumber(redis.call('GET', fence_key) or '0')
  if epoch < fence then
    count(stats_key, 'rejected_stale_epoch')
    return true
  end
  return false
end

-- "Final" is read off LEGAL, as retention.lua does: a state with no way out.
local function is_final(status)
  return LEGAL[status] ~= nil and next(LEGAL[status]) == nil
end

-- RPUSH many values in chunks: Lua's unpack() is capped at a few thousand values, and a
-- composite may have 10 000 children.
local function push_all(key, values)
  for i = 1, #values, 1000 do
    redis.call('RPUSH', key, unpack(values, i, math.min(i + 999, #values)))
  end
end

-- A script's KEYS and ARGV come in per-child groups after a fixed head; a caller that counted
-- them wrong is a bug, refused before anything is written.
local function groups(total, head, size)
  local n = (total - head) / size
  if n < 0 or n ~= math.floor(n) then
    error('tasklab: ' .. total .. ' arguments do not make groups of ' .. size .. ' after ' .. head)
  end
  return n
end

-- Create children as create_task() creates a task (the hash from its fields, the first history
-- entry, its place in the index), in bulk: one history entry encoded per status rather than
-- per child, and the index written a thousand entries per ZADD. A composite of 10 000 children
-- is one call; this keeps the time Redis spends in it down.
-- Children i = 0..n-1: KEYS[key_at + 2i] task, KEYS[key_at + 2i + 1] history;
-- ARGV[arg_at + 2i] taskId, ARGV[arg_at + 2i + 1] hash fields JSON. With `only_new`, a child
-- whose hash exists already is left as it is. Returns how many were created.
local function create_children(index_key, key_at, arg_at, n, now, actor, reason, only_new)
  local entries = {}
  local scored = {}
  for i = 0, n - 1 do
    local tkey = KEYS[key_at + 2 * i]
    if not only_new or redis.call('EXISTS', tkey) == 0 then
      local fields = cjson.decode(ARGV[arg_at + 2 * i + 1])
      local args = {}
      for k, v in pairs(fields) do
        args[#args + 1] = k
        args[#args + 1] = tostring(v)
      end
      redis.call('HSET', tkey, unpack(args))
      local state = fields.status or 'PENDING'
      if not entries[state] then
        entries[state] = cjson.encode({state = state, at = now, actor = actor, epoch = 0,
                                       attempt = 1, reason = reason})
      end
      redis.call('RPUSH', KEYS[key_at + 2 * i + 1], entries[state])
      scored[#scored + 1] = now
      scored[#scored + 1] = ARGV[arg_at + 2 * i]
    end
  end
  for i = 1, #scored, 2000 do
    redis.call('ZADD', index_key, unpack(scored, i, math.min(i + 1999, #scored)))
  end
  return #scored / 2
end
