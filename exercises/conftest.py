"""Exercises that check themselves: each test fails, with a message saying what to do, until
the learner's change is right. They live outside `testpaths`, so the normal test run never
collects them: `make exercise-stage1` (2, 3) runs them.

With TASKLAB_EXERCISE_SOLUTIONS=1 the reference solutions (exercises/solutions/) are plugged
in first; tests/exercises/ runs every exercise that way, and once without, so an exercise that
no longer fails for its reason, or that its solution no longer passes, fails the normal run.
"""

import os

if os.environ.get("TASKLAB_EXERCISE_SOLUTIONS") == "1":
    from exercises.solutions import install

    install()
