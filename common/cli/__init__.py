"""The one `tasklab` command line, the same verbs in every stage."""
