"""Stage 5, observability: the stage 4 platform with metrics, alerts, dashboards, logs and
traces, and the guarantee checker in its topology."""
