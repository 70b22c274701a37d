"""Stage 2: ZooKeeper coordination: agent registry, leader-elected scheduler, failover."""
