-- Give back one entry of a lost agent's work: an agent that stopped heartbeating (stage 1,
-- or silent on the stage 3 heartbeat topic), whose ZooKeeper node vanished (stage 2, by the
-- leader), or this agent's own previous run at start-up. The task goes back to PENDING with
-- attempt + 1, so a late report from the dead owner is stale and rejected; after
-- `maxLost` runs lost with their agent it ends FAILED instead.
--
-- Why the leader's call also carries the agent's incarnation: the leader asks ZooKeeper
-- whether the agent is gone and then reaps, two steps. If the agent restarts in between and
-- is given work again, a reap of its lists would re-queue work that is live. Every start of
-- an agent bumps agent:{id}:incarnation (in the same step that begins its own start-up
-- reap, before it registers in ZooKeeper). The leader reads the incarnation *before* asking
-- ZooKeeper; this script refuses if it moved since. So either the restart bumped it after the
-- leader's read (refused here), or before it, and then the agent was not registered yet when
-- ZooKeeper said "gone", so it had no new work: everything on its lists is the dead run's.
--
-- A task failed here (lost too often) has no agent left to report it: its final state goes to
-- the archive's outbox in the same step (archive_outbox.lua).
--
-- A live agent also calls it, for entries a call of its own put on its processing list while
-- it had stopped listening for the answer (a Redis frozen past the client's socket timeout;
-- RedisListIntake.reconcile). Those never ran: the options say so (notRun), with the reason.
--
-- KEYS: 1 the list, 2 task, 3 history, 4 target queue, 5 stats, 6 fence,
--       7 heartbeat key, 8 incarnation key, 9 archive:outbox,
--       10 (optional) the reaping agent's own heartbeat key (stage 1)
-- ARGV: 1 the exact entry, 2 JSON options (see give_back in prelude.lua)
-- Returns {code, reason, status, attempt} (see give_back).
local a = cjson.decode(ARGV[2])
a.from = {RUNNING = true, DISPATCHED = true}
a.reason = a.reason or ('agent ' .. a.agent .. ' lost')
local r = give_back(give_back_keys(), ARGV[1], a)
if r[2] == 'lost_too_often' then
  archive_outbox(KEYS[9], KEYS[2], a.actor, 'failover', redis.call('HGET', KEYS[2], 'error'))
end
return r
