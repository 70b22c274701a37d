"""Reference solutions of the exercises. Try an exercise before reading its solution.

`install()` plugs every solution into the code the exercise tests look at, the way a learner's
change would: a claim strategy into stage 1's CLAIMS, a different `decide()`, two placement
strategies into the registry, a function and a module in common/messaging, a link in the
REST chain and a balancing choice in the TaskService proxy. The exercise tests
run against them in tests/exercises/, so neither the tests nor the solutions can rot.
"""

from __future__ import annotations


def install() -> None:
    from exercises.solutions import stage1, stage2, stage3, stage4

    stage1.install()
    stage2.install()
    stage3.install()
    stage4.install()
