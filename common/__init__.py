"""tasklab's shared package: everything more than one stage uses lives here.

`common` never imports a stage; stages plug into it (see `common.stages`).
"""
