"""Example code a deployment registers, not code tasklab runs by itself.

Nothing in `common` imports these modules: an agent imports them by name, from its settings
(`agent_handlers`), in its zygotes, and that is why they import only the standard library.
"""
