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
