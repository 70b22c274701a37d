"""Stage 4: the front door. The stage 3 platform plus the gRPC TaskService providers."""
