"""The web console under /ui/: server-rendered pages over the same commands and views as the
REST routes (common.api.console.pages), its session and CSRF check (common.api.console.session),
templates and static files (htmx, vendored; no JavaScript build)."""
